"""The consumer loop every service uses: consume, handle, then commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from datapolis_shared.errors import InvalidInput, Unavailable
from datapolis_shared.kafka.deadletters import dead_letter_record
from datapolis_shared.kafka.options import client_options
from datapolis_shared.kafka.producer import Producer
from datapolis_shared.logs import event_id_var
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)


# Errors that say "try again later" rather than "this record is bad".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    Unavailable,
    KafkaError,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)

Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]
# Takes one partition's polled records at once (topic, records), for consumers
# whose effect is cheaper per batch (one produce round trip instead of many).
BatchHandler = Callable[[str, Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[None]]
# Labels of datapolis_events_consumed_total: handled, or parked on the dead letters.
CONSUMED_OUTCOMES = ("processed", "dead_lettered")


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    """Whether the group has given a consumer its partitions (possibly none)."""

    def __init__(self) -> None:
        self.received = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.received = True


class ConsumerLoop:
    """Consume, handle, then commit: offsets move only after the handler's
    effect is durable. A record the handler refuses goes to the dead letters
    and the partition moves on; a transient failure is retried with backoff
    without committing, so nothing is skipped while a dependency is down.

    It subscribes to ``topics`` or to a regex ``pattern``, and takes either a
    per-record ``handler`` or a per-partition ``batch_handler``."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        name: str,
        group_id: str,
        producer: Producer,
        topics: Sequence[str] = (),
        pattern: str | None = None,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        max_records: int = 500,
        stuck_after_s: float = 60.0,
        auto_offset_reset: str = "earliest",
        metrics: ServiceMetrics | None = None,
        track_behind: bool = False,
    ) -> None:
        if bool(topics) == (pattern is not None):
            raise ValueError("a consumer loop takes topics or a pattern, one of the two")
        if (handler is None) == (batch_handler is None):
            raise ValueError("a consumer loop takes a handler or a batch_handler, one of the two")
        self.name = name
        self._settings = settings
        self._group_id = group_id
        self._topics = list(topics)
        self._pattern = pattern
        self._handler = handler
        self._batch_handler = batch_handler
        self._max_records = max_records
        self._producer = producer
        self._stuck_after_s = stuck_after_s
        self._auto_offset_reset = auto_offset_reset
        self._track_behind = track_behind
        self._last_progress = time.monotonic()
        self._assignment = _Assignment()
        self._task: asyncio.Task[None] | None = None
        self._metrics = metrics
        if metrics is not None:  # the series exist, at 0, before the first record
            for outcome in CONSUMED_OUTCOMES:
                metrics.events_consumed.labels(name, outcome)
        self.processed = 0
        self.dead_lettered = 0
        # With track_behind: records on its partitions it has not handled yet,
        # as of its last fetch; None while unknown (starting, stopped, or
        # handling a batch) and always without track_behind.
        self.behind: int | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name=f"consumer:{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.behind = None

    def problem(self) -> str | None:
        """Why this consumer cannot do its job, or None when it is healthy."""
        if self._task is None:
            return "not started"
        if self._task.done():
            return "stopped"
        if not self._assignment.received:
            return "waiting for its partitions (joining its consumer group)"
        idle = time.monotonic() - self._last_progress
        if idle > self._stuck_after_s:
            return f"no progress for {idle:.0f}s"
        return None

    async def _run_forever(self) -> None:
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                **client_options(self._settings),
                group_id=self._group_id,
                client_id=f"{self._group_id}-{self.name}",
                enable_auto_commit=False,
                auto_offset_reset=self._auto_offset_reset,
                isolation_level="read_committed",
                metadata_max_age_ms=5_000,
            )
            self._assignment = _Assignment()
            self.behind = None
            if self._pattern is not None:
                consumer.subscribe(pattern=self._pattern, listener=self._assignment)
            else:
                consumer.subscribe(topics=self._topics, listener=self._assignment)
            try:
                await consumer.start()
                backoff = 0.5
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer %s failed; restarting in %.1fs", self.name, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            self._last_progress = time.monotonic()
            batches = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
            if batches:
                self.behind = None
            for tp, records in batches.items():
                if self._batch_handler is not None:
                    await self._handle_batch(tp.topic, records)
                else:
                    for record in records:
                        await self._handle(record)
                await consumer.commit(
                    {TopicPartition(tp.topic, tp.partition): records[-1].offset + 1}
                )
            if self._track_behind:
                self.behind = await _behind(consumer)

    async def _handle_batch(self, topic: str, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._batch_handler is not None
        handle_batch = self._batch_handler
        await self._retrying(
            f"{topic}/{records[0].partition}@{records[0].offset}..{records[-1].offset}",
            lambda: handle_batch(topic, records),
            records,
        )

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        assert self._handler is not None
        handle = self._handler
        await self._retrying(
            f"{record.topic}/{record.partition}@{record.offset}", lambda: handle(record), [record]
        )

    async def _retrying(
        self,
        where: str,
        attempt: Callable[[], Awaitable[None]],
        records: Sequence[ConsumerRecord[bytes, bytes]],
    ) -> None:
        """Run ``attempt`` until it succeeds or fails for a reason other than a
        dependency being down; then dead-letter ``records`` and move on."""
        delay = 0.2
        while True:
            token = event_id_var.set(where)
            try:
                await attempt()
                self.processed += len(records)
                self._count("processed", len(records))
                self._last_progress = time.monotonic()
                return
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "consumer %s: transient failure at %s, retrying in %.1fs: %r",
                    self.name,
                    where,
                    delay,
                    exc,
                )
                self._last_progress = time.monotonic()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                # The records themselves are bad (or the handler cannot process
                # them): park them, say where they were, let the partition move on.
                reason = exc.message if isinstance(exc, InvalidInput) else repr(exc)
                log.exception("consumer %s: dead-lettering %s: %s", self.name, where, reason)
                await self._producer.send_many(
                    [dead_letter_record(r, consumer=self.name, error=reason) for r in records]
                )
                self.dead_lettered += len(records)
                self._count("dead_lettered", len(records))
                return
            finally:
                event_id_var.reset(token)

    def _count(self, outcome: str, records: int) -> None:
        if self._metrics is not None:
            self._metrics.events_consumed.labels(self.name, outcome).inc(records)


async def _behind(consumer: AIOKafkaConsumer) -> int | None:
    """Records between the consumer's positions and the ends of its assigned
    partitions (as of its last fetch), or None when a partition's end is unknown."""
    assigned = consumer.assignment()
    if not assigned:
        return None
    total = 0
    for tp in assigned:
        end = consumer.last_stable_offset(tp)
        if end is None:
            return None
        total += max(0, end - await consumer.position(tp))
    return total
