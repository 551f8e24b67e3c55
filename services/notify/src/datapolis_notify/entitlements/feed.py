"""Keeps an entitlement view current in any process (the worker, each API
replica), and proves it.

At start, the view is loaded from a snapshot of notify's tables and their
``entitlement_offsets`` (one repeatable-read transaction, see
:func:`~datapolis_notify.entitlements.projection.load_snapshot`); the feed
then reads ``datapolis.catalog.events`` and ``datapolis.consent.events``
from those offsets (from the beginning of a partition without one) with a
consumer of no group: every process sees every partition, so every replica
sees every change, and each event is applied to the view as it arrives.

Being current, provably: every ``poll_interval_s`` (0.1 s) the feed notes
the time t0, then asks Kafka for the ends of every partition. Once its
positions have reached them, every event acknowledged before t0 is in the
view, and the view is told it caught up at t0. The view is current while
that was at most ``staleness_s`` (0.5 s) ago, so a revoke acknowledged at T
is either applied or the view stops deciding non-open deliveries by
T + ``staleness_s``: within the 1 s bound, whatever happens to Kafka. A
broker outage makes the view not current: unknown state means no delivery.

Metrics: ``datapolis_entitlements_seconds_since_caught_up``,
``datapolis_entitlement_events_applied_total``, and
``datapolis_entitlement_end_applied_seconds``: for each change that ends an
entitlement (a revoke, termination, withdrawal or expiry), the time from its
recording in consent's ledger to its application in this view. The call that
made it answered after the recording, so an observation above 1 s is the
only way a delivery could begin later than the bound allows: the alert
``DatapolisRevocationBoundAtRisk`` watches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Counter, Gauge, Histogram

from datapolis_notify.entitlements.projection import load_snapshot
from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.entitlements.view import APPLIED_EVENT_TYPES, CONSENT_TYPES, Entitlements
from datapolis_shared.errors import InvalidInput, Unavailable
from datapolis_shared.events.base import Event, parse_event
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.events.consent import (
    AgreementExpired,
    AgreementRevoked,
    AgreementTerminated,
    ConsentExpired,
    ConsentWithdrawn,
)
from datapolis_shared.kafka.options import client_options, describe
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.retry import Backoff, keep_running
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

# Ending an entitlement: what the revocation bound is about.
ENDING_EVENTS: tuple[type[Event], ...] = (
    AgreementRevoked,
    AgreementTerminated,
    AgreementExpired,
    ConsentWithdrawn,
    ConsentExpired,
)
# 1.0 is the stated bound: the alert compares the count above it.
END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)

# Probes whose ends the feed has not reached yet, kept at most (older ones
# are dropped: a later one reached proves more).
MAX_PENDING = 32
# Seconds a stopped feed reports as behind (the gauge must not read 0).
NEVER = float("inf")


class FeedMetrics:
    def __init__(self, metrics: ServiceMetrics, feed: EntitlementFeed) -> None:
        self.applied = Counter(
            "datapolis_entitlement_events_applied_total",
            "Catalog and consent events that changed this process's entitlement view",
            registry=metrics.registry,
        )
        self.behind = Gauge(
            "datapolis_entitlements_seconds_since_caught_up",
            "Seconds since this process's entitlement view last proved it had every "
            "acknowledged change (beyond the staleness setting, only open data is delivered)",
            registry=metrics.registry,
        )
        self.behind.set_function(feed.seconds_behind)
        self.end_applied = Histogram(
            "datapolis_entitlement_end_applied_seconds",
            "Seconds from a revoke, termination, withdrawal or expiry being recorded by "
            "consent to its application in this process's entitlement view",
            buckets=END_BUCKETS,
            registry=metrics.registry,
        )


class EntitlementFeed:
    """Feeds ``view`` from Kafka, from a snapshot in ``pool`` (None: from the
    beginning of the topics, for a process without notify's tables)."""

    def __init__(
        self,
        view: Entitlements,
        kafka: KafkaSettings,
        settings: EntitlementSettings,
        *,
        pool: Pool | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.view = view
        self._kafka = kafka
        self._settings = settings
        self._pool = pool
        self._topics = settings.topics
        # The next offset to read, per partition: the snapshot's, then the
        # feed's own (a reconnection resumes there).
        self._positions: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._loaded = False
        self._metrics = FeedMetrics(metrics, self) if metrics is not None else None
        self.skipped = 0

    async def start(self) -> None:
        """Load the snapshot, then follow Kafka in the background. When
        PostgreSQL does not answer yet (or notify's tables are missing), the
        background task loads it as soon as it can; the view is not current
        until the feed caught up, so it refuses non-open deliveries until then."""
        try:
            await self._load()
        except Exception as exc:
            log.warning("entitlements: cannot load the snapshot yet, retrying: %r", exc)
        self._task = asyncio.create_task(self._run(), name="entitlement-feed")

    async def _load(self) -> None:
        if self._loaded:
            return
        if self._pool is not None:
            snapshot = await load_snapshot(self._pool, self._topics)
            self.view.restore(snapshot)
            self._positions = {
                TopicPartition(topic, partition): offset
                for (topic, partition), offset in snapshot.offsets.items()
            }
            log.info(
                "entitlements: snapshot of %d datasets, %d agreements, %d consents",
                len(snapshot.datasets),
                len(snapshot.agreements),
                len(snapshot.consents),
            )
        self._loaded = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def seconds_behind(self) -> float:
        behind = self.view.seconds_behind()
        return NEVER if behind is None else behind

    async def problem(self) -> str | None:
        """The readiness check: None while the view is current."""
        if self._task is None or self._task.done():
            return "the entitlement feed is not running"
        if self.view.is_current():
            return None
        behind = self.view.seconds_behind()
        if behind is None:
            return "the entitlement view has not caught up with Kafka yet"
        return f"the entitlement view is {behind:.1f}s behind Kafka"

    async def _run(self) -> None:
        await keep_running(
            self._follow_until_failure,
            doing=f"entitlement feed (Kafka at {describe(self._kafka)})",
            backoff=Backoff(initial_s=0.2, max_s=2.0),
        )

    async def _partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(**client_options(self._kafka))
        await admin.start()
        try:
            described = await admin.describe_topics(list(self._topics))
        finally:
            await admin.close()
        partitions = []
        for topic in described:
            if topic.get("error_code"):
                raise Unavailable(f"topic {topic['topic']} cannot be described yet")
            partitions += [
                TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]
            ]
        return partitions

    async def _follow_until_failure(self) -> None:
        await self._load()
        partitions = await self._partitions()
        consumer = AIOKafkaConsumer(
            **client_options(self._kafka),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
            # How soon partitions added to the topics are noticed.
            metadata_max_age_ms=5_000,
            client_id="datapolis-notify-entitlements",
        )
        try:
            await consumer.start()
            consumer.assign(partitions)
            for tp in partitions:
                if tp in self._positions:
                    consumer.seek(tp, self._positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            await self._follow(consumer, partitions)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        interval = self._settings.poll_interval_s
        next_probe = 0.0
        # Ends Kafka gave after t0, not reached yet: under a steady stream
        # of changes the feed is rarely at the very end when it asks, but it
        # passes each earlier answer's ends moments later.
        pending: deque[tuple[float, dict[TopicPartition, int]]] = deque(maxlen=MAX_PENDING)
        while True:
            batches = await consumer.getmany(timeout_ms=int(interval * 1000), max_records=1000)
            for tp, records in batches.items():
                for record in records:
                    self._apply(record)
                self._positions[tp] = records[-1].offset + 1
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + interval
                probed = await self._probe(consumer, partitions)
                if probed is not None:
                    pending.append(probed)
            await self._settle(consumer, partitions, pending)

    async def _probe(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> tuple[float, dict[TopicPartition, int]] | None:
        """The time t0 and the ends of every partition as Kafka gave them
        after t0, or None when Kafka did not answer in time (the view then
        ages out of being current)."""
        t0 = self.view.clock()
        self._require_same_partitions(consumer, partitions)
        try:
            ends = await asyncio.wait_for(
                consumer.end_offsets(partitions), timeout=self._settings.staleness_s
            )
        except TimeoutError:
            return None
        return t0, ends

    async def _settle(
        self,
        consumer: AIOKafkaConsumer,
        partitions: list[TopicPartition],
        pending: deque[tuple[float, dict[TopicPartition, int]]],
    ) -> None:
        """Tell the view it caught up at the latest t0 whose ends the feed
        has read up to (every change acknowledged before t0 is applied)."""
        if not pending:
            return
        positions = {
            # The consumer's position moves past transaction markers too.
            tp: max(self._positions.get(tp, 0), await consumer.position(tp))
            for tp in partitions
        }
        reached: float | None = None
        while pending and all(positions[tp] >= end for tp, end in pending[0][1].items()):
            reached = pending.popleft()[0]
        if reached is not None:
            self.view.caught_up(reached)

    def _require_same_partitions(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> None:
        """A partition added to a topic would hold changes the feed does not
        read, while its probe still found it caught up: start over with it."""
        for topic in self._topics:
            known = consumer.partitions_for_topic(topic)
            assigned = {tp.partition for tp in partitions if tp.topic == topic}
            if known is not None and set(known) != assigned:
                raise Unavailable(f"the partitions of {topic} changed: reassigning")

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            envelope = from_structured(record.value or b"")
        except InvalidInput as exc:
            self._skip(record, exc)
            return
        if envelope.type not in APPLIED_EVENT_TYPES and not envelope.type.startswith(CONSENT_TYPES):
            return
        try:
            event = parse_event(envelope)
        except InvalidInput as exc:
            self._skip(record, exc)
            # An agreement's or consent's change it cannot read may be an
            # end: refuse what it is about rather than go on delivering.
            if envelope.type.startswith(CONSENT_TYPES) and isinstance(envelope.data, dict):
                self.view.distrust(envelope.data)
            return
        if self.view.apply(event) and self._metrics is not None:
            self._metrics.applied.inc()
            if isinstance(event, ENDING_EVENTS):
                recorded = getattr(event, "occurred_at", None)
                if isinstance(recorded, datetime):
                    delay = (datetime.now(UTC) - recorded).total_seconds()
                    self._metrics.end_applied.observe(max(delay, 0.0))

    def _skip(self, record: ConsumerRecord[bytes, bytes], exc: InvalidInput) -> None:
        # Not ours to park: the projection's consumer sends it to the dead
        # letters. The view can only go on without it.
        self.skipped += 1
        log.warning(
            "entitlements: skipping %s/%d@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            exc,
        )


async def start_entitlements(
    runtime: Runtime, settings: EntitlementSettings, *, readiness: bool = True
) -> EntitlementFeed:
    """A process's entitlement view (``feed.view``) and its running feed,
    from the runtime's Kafka settings, pool and metrics: call it once
    connected. ``readiness``: ``/readyz`` reports ``entitlements`` not ready
    while the view is not current (the worker's choice; an API whose other
    routes should stay up passes False)."""
    view = Entitlements(staleness_s=settings.staleness_s)
    feed = EntitlementFeed(
        view, runtime.settings.kafka, settings, pool=runtime.pool, metrics=runtime.metrics
    )
    if readiness:
        runtime.checks["entitlements"] = feed.problem
    await feed.start()
    return feed
