"""Kafka topics of datasets: created after the commit that needs them, and
reconciled until Kafka confirmed them.

The registration commits first (dataset, its ``dataset_topics`` rows and the
outbox events in one transaction), then asks Kafka for the topics. If Kafka is
down at that moment the rows stay unprovisioned and the reconciliation loop
(at start and every ``provisioning_interval_s``) creates them later, so a
dataset never stays without its topics. Creating a topic that exists is a no-op,
so several catalog replicas may reconcile at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from datapolis_shared.errors import Unavailable
from datapolis_shared.kafka import TopicSpec, ensure_topics
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000

SELECT_PENDING = """
SELECT topic_name, partitions, retention_ms FROM dataset_topics
WHERE provisioned_at IS NULL AND ($1::text IS NULL OR dataset_id = $1)
ORDER BY created_at LIMIT 500
"""
MARK_PROVISIONED = """
UPDATE dataset_topics SET provisioned_at = now()
WHERE topic_name = ANY($1::text[]) AND provisioned_at IS NULL
"""
OLDEST_PENDING = """
SELECT extract(epoch FROM now() - min(created_at)) FROM dataset_topics WHERE provisioned_at IS NULL
"""


def topic_spec(name: str, *, partitions: int, retention_ms: int) -> TopicSpec:
    return TopicSpec(
        name, partitions, {"retention.ms": str(retention_ms), "cleanup.policy": "delete"}
    )


class Provisioner:
    def __init__(
        self,
        pool: Pool,
        kafka: KafkaSettings,
        *,
        interval_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self.kafka = kafka
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    async def provision(self, dataset_id: str | None = None) -> bool:
        """Create the pending topics (of one dataset, or all); False when Kafka
        could not do it now (the reconciliation loop will try again)."""
        rows = await self._pool.fetch(SELECT_PENDING, dataset_id)
        if not rows:
            return True
        specs = [
            topic_spec(r["topic_name"], partitions=r["partitions"], retention_ms=r["retention_ms"])
            for r in rows
        ]
        try:
            async with asyncio.timeout(self._timeout_s):
                created = await ensure_topics(self.kafka, specs)
        except (Unavailable, TimeoutError) as exc:
            self.last_error = exc.message if isinstance(exc, Unavailable) else "timed out"
            log.warning(
                "topics %s not provisioned yet (%s); the reconciliation will retry",
                ", ".join(s.name for s in specs),
                self.last_error,
            )
            return False
        await self._pool.execute(MARK_PROVISIONED, [s.name for s in specs])
        self.last_error = None
        if created:
            log.info("provisioned topics %s", ", ".join(created))
        return True

    async def provision_after_commit(self, dataset_id: str) -> bool:
        """Right after a commit that needs topics: whatever goes wrong here is
        the reconciliation's to retry, never the (already committed) request's."""
        try:
            return await self.provision(dataset_id)
        except Exception as exc:
            self.last_error = repr(exc)
            log.warning("topics of dataset %s left to the reconciliation: %r", dataset_id, exc)
            return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="topic-reconciliation")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def problem(self) -> str | None:
        """Readiness: topics waiting for more than two reconciliation rounds."""
        if self._task is None or self._task.done():
            return "topic reconciliation not running"
        waiting = await self._pool.fetchval(OLDEST_PENDING)
        if waiting is not None and float(waiting) > 2 * self._interval_s + self._timeout_s:
            return f"dataset topics waiting for Kafka for {float(waiting):.0f}s: {self.last_error}"
        return None

    async def _run(self) -> None:
        while True:
            try:
                await self.provision()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # PostgreSQL down: nothing is lost, the rows wait for the next round.
                self.last_error = repr(exc)
                log.warning("topic reconciliation failed: %r", exc)
            await asyncio.sleep(self._interval_s)
