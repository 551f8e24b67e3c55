"""Producers at work: every generator's records pushed through ingest, each
by its dataset's publisher, once a second."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from datapolis_demo.generators import Generator, every_generator
from datapolis_demo.metropolis import DATASETS
from datapolis_demo.platform import Platform, StepFailed
from datapolis_demo.seed import Member

# Population is a slower statistic: one batch every ten ticks.
EVERY_N_TICKS = {"population-by-district": 10}


class Streamer:
    def __init__(
        self,
        platform: Platform,
        members: dict[str, Member],
        say: Callable[[str], None],
        interval_s: float = 1.0,
    ) -> None:
        self.platform = platform
        self.say = say
        self.interval_s = interval_s
        self.publisher_key = {spec.slug: members[spec.publisher.handle].key for spec in DATASETS}
        self.generators: list[Generator] = every_generator()
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        tick = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            now = datetime.now(UTC)
            await asyncio.gather(
                *(
                    self._push(generator, now)
                    for generator in self.generators
                    if tick % EVERY_N_TICKS.get(generator.slug, 1) == 0
                )
            )
            tick += 1
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))

    async def _push(self, generator: Generator, now: datetime) -> None:
        records = generator.records(now)
        try:
            answer = await self.platform.call(
                "POST", "ingest", f"/datasets/{generator.slug}/records",
                key=self.publisher_key[generator.slug], json=records,
                headers={"Datapolis-Schema-Version": "1"}, retry_for_s=10.0,
            )  # fmt: skip
        except StepFailed as error:
            self.say(f"push to {generator.slug} failed: {error}")
            return
        body = answer.json()
        self.accepted[generator.slug] += body["accepted"]
        if body["rejected"]:
            self.rejected[generator.slug] += len(body["rejected"])
            self.say(f"{generator.slug}: {len(body['rejected'])} rejected: {body['rejected'][0]}")
