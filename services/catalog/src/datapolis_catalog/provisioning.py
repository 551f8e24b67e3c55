"""Kafka topics of datasets: PostgreSQL holds what they should be, and this
module makes Kafka match, after the commit that changes it and in a
reconciliation loop.

A registration, a new major version, or a change of a dataset's partitions or
retention commits first (the ``dataset_topics`` rows with the wanted partitions
and ``retention.ms``, and the outbox events, in one transaction), then asks
Kafka to converge: create a missing topic, add partitions up to the wanted
count, set ``retention.ms``. A row's ``provisioned_at`` stays NULL until Kafka
confirmed its current description. If Kafka is down at that moment the
reconciliation loop (at start and every ``provisioning_interval_s``) does it
later; each round compares every topic with its row, so a topic changed behind
the catalog's back (or a lost race between replicas) is set right too. Every
step is idempotent, so several catalog replicas may reconcile at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from datapolis_shared.errors import Unavailable, public_message
from datapolis_shared.kafka import TopicSpec, converge_topics
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000

# Rows in pages of ``topic_name``, of one dataset or all.
SELECT_TOPICS = """
SELECT topic_name, partitions, retention_ms FROM dataset_topics
WHERE ($1::text IS NULL OR dataset_id = $1) AND topic_name > $2
ORDER BY topic_name LIMIT $3
"""
# Only rows that still describe what Kafka was given: a change committed
# meanwhile stays owed.
MARK_PROVISIONED = """
UPDATE dataset_topics t SET provisioned_at = now()
FROM unnest($1::text[], $2::int[], $3::bigint[]) AS c (topic_name, partitions, retention_ms)
WHERE t.topic_name = c.topic_name AND t.partitions = c.partitions
  AND t.retention_ms = c.retention_ms AND t.provisioned_at IS NULL
"""
OLDEST_PENDING = """
SELECT extract(epoch FROM now() - min(desired_at)) FROM dataset_topics WHERE provisioned_at IS NULL
"""


def topic_spec(name: str, *, partitions: int, retention_ms: int) -> TopicSpec:
    return TopicSpec(
        name, partitions, {"retention.ms": str(retention_ms), "cleanup.policy": "delete"}
    )


def _plain(exc: Exception) -> str:
    """What readiness (answered to anyone) may say: the driver's words stay in the log."""
    if isinstance(exc, Unavailable):
        return public_message(exc)
    return "an unexpected error (see the service's log)"


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
        self.page_size = 200

    async def provision(self, dataset_id: str | None = None) -> bool:
        """Make Kafka match the ``dataset_topics`` rows (of one dataset, or
        all); False when Kafka could not do it now (the reconciliation loop
        will try again)."""
        after = ""
        while rows := await self._pool.fetch(SELECT_TOPICS, dataset_id, after, self.page_size):
            if not await self._converge(rows):
                return False
            after = rows[-1]["topic_name"]
        self.last_error = None
        return True

    async def _converge(self, rows: list[Any]) -> bool:
        specs = [
            topic_spec(r["topic_name"], partitions=r["partitions"], retention_ms=r["retention_ms"])
            for r in rows
        ]
        try:
            async with asyncio.timeout(self._timeout_s):
                changes = await converge_topics(self.kafka, specs)
        except (Unavailable, TimeoutError) as exc:
            self.last_error = public_message(exc) if isinstance(exc, Unavailable) else "timed out"
            log.warning(
                "topics %s not converged yet (%s); the reconciliation will retry",
                ", ".join(s.name for s in specs),
                self.last_error,
            )
            return False
        await self._pool.execute(
            MARK_PROVISIONED,
            [r["topic_name"] for r in rows],
            [r["partitions"] for r in rows],
            [r["retention_ms"] for r in rows],
        )
        if changes.created:
            log.info("created topics %s", ", ".join(changes.created))
        for name, count in changes.partitions_added.items():
            log.info("topic %s now has %d partitions", name, count)
        if changes.configs_altered:
            log.info("set retention.ms, cleanup.policy of %s", ", ".join(changes.configs_altered))
        for name, count in changes.extra_partitions.items():
            log.warning(
                "topic %s has %d partitions, more than its dataset says; Kafka cannot remove "
                "partitions, so raise the dataset's partitions to match",
                name,
                count,
            )
        return True

    async def provision_after_commit(self, dataset_id: str) -> bool:
        """Right after a commit that changes topics: whatever goes wrong here is
        the reconciliation's to retry, never the (already committed) request's."""
        try:
            return await self.provision(dataset_id)
        except Exception as exc:
            self.last_error = _plain(exc)
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
        """Readiness: topic changes waiting for more than two reconciliation rounds."""
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
                self.last_error = _plain(exc)
                log.warning("topic reconciliation failed: %r", exc)
            await asyncio.sleep(self._interval_s)
