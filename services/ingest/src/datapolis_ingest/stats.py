"""Accepted / rejected / duplicate counts, aggregated per dataset, producer and
channel, announced as ``BatchIngested`` once per interval rather than once per
request (at 200 requests/s one event each would drown catalog's stats worker).

Counts survive a failed send: they are added back and go with the next flush.
Stats are not records: at worst a process that dies loses its last interval.

The same counts, per channel and outcome, are also the process's
``datapolis_ingest_records_total`` counter: what a dashboard or an alert
reads, with no need for the broker's offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from prometheus_client import CollectorRegistry, Counter

from datapolis_ingest.ports import RecordSink
from datapolis_shared.errors import DatapolisError
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.events.ingest import BatchIngested
from datapolis_shared.kafka import OutgoingRecord

log = logging.getLogger(__name__)

Channel = Literal["http", "kafka"]
_Key = tuple[str, str, str, Channel]  # dataset id, slug, producer org, channel


OUTCOMES = ("accepted", "rejected", "duplicate")


def records_counter(registry: CollectorRegistry) -> Counter:
    """``datapolis_ingest_records_total{channel, outcome}``, every series at 0
    from the start (a rate over a series that appears late misses its first
    increase)."""
    counter = Counter(
        "datapolis_ingest_records_total",
        "Records received, by channel (http, kafka) and outcome (accepted, rejected, duplicate)",
        ["channel", "outcome"],
        registry=registry,
    )
    for channel in ("http", "kafka"):
        for outcome in OUTCOMES:
            counter.labels(channel, outcome)
    return counter


class StatsAggregator:
    def __init__(
        self,
        sink: Callable[[], RecordSink],
        *,
        interval_s: float,
        records: Counter | None = None,
    ) -> None:
        self._sink = sink
        self._interval_s = interval_s
        self._records = records
        self._counts: dict[_Key, list[int]] = {}
        self._task: asyncio.Task[None] | None = None
        self.events_sent = 0

    def add(
        self,
        *,
        dataset_id: str,
        slug: str,
        producer_org_id: str,
        channel: Channel,
        accepted: int,
        rejected: int,
        duplicates: int,
    ) -> None:
        if self._records is not None:
            for outcome, count in zip(OUTCOMES, (accepted, rejected, duplicates), strict=True):
                if count:
                    self._records.labels(channel, outcome).inc(count)
        self._gather(dataset_id, slug, producer_org_id, channel, accepted, rejected, duplicates)

    def _gather(
        self,
        dataset_id: str,
        slug: str,
        producer_org_id: str,
        channel: Channel,
        accepted: int,
        rejected: int,
        duplicates: int,
    ) -> None:
        counts = self._counts.setdefault((dataset_id, slug, producer_org_id, channel), [0, 0, 0])
        counts[0] += accepted
        counts[1] += rejected
        counts[2] += duplicates

    def events(self) -> list[BatchIngested]:
        """Take the counts gathered so far as events (and reset them)."""
        counts, self._counts = self._counts, {}
        now = datetime.now(UTC)
        return [
            BatchIngested(
                dataset_id=dataset_id,
                slug=slug,
                producer_org_id=org,
                channel=channel,
                accepted=accepted,
                rejected=rejected,
                duplicates=duplicates,
                received_at=now,
            )
            for (dataset_id, slug, org, channel), (accepted, rejected, duplicates) in counts.items()
        ]

    async def flush(self) -> int:
        events = self.events()
        if not events:
            return 0
        records = []
        for event in events:
            value, headers = to_structured(event.to_cloudevent())
            records.append(OutgoingRecord(event.topic, value, event.key().encode(), headers))
        try:
            await self._sink().send_many(records)
        except DatapolisError:
            for e in events:  # not lost: they go with the next flush (counted once)
                self._gather(
                    e.dataset_id,
                    e.slug,
                    e.producer_org_id,
                    e.channel,
                    e.accepted,
                    e.rejected,
                    e.duplicates,
                )
            raise
        self.events_sent += len(events)
        return len(events)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-stats")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(DatapolisError, TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=5)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except DatapolisError as exc:
                log.warning("could not send ingest stats (kept for the next flush): %s", exc)
