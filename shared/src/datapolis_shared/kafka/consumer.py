"""The consumer loop every service uses: consume, handle, then commit.

A record whose handler fails transiently (an endpoint or a service that does
not answer) is retried with backoff within a :class:`RetryPolicy`; when the
policy is exhausted the record is parked (the dead letters, or the handler's
own ``park`` path, such as a retry schedule) and its partition moves on. A
record is never parked because the loop's own infrastructure is down: when
its dependency probes (Kafka, and PostgreSQL for services that pass it) fail,
the loop holds the record, reports itself paused, and gives it a fresh budget
once they answer again. Nothing is committed before the record is handled or
parked, so nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from datapolis_shared.errors import InvalidInput, Unavailable
from datapolis_shared.kafka.deadletters import dead_letter_record
from datapolis_shared.kafka.options import client_options, describe
from datapolis_shared.kafka.producer import Producer
from datapolis_shared.logs import event_id_var
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.retry import Backoff, keep_running
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
# Where records go when their transient failures outlast the retry policy,
# with the reason (the last error), instead of the dead letters: a handler's
# own retry schedule, say. It must be durable when it returns: the offsets
# are committed after it.
Park = Callable[[Sequence[ConsumerRecord[bytes, bytes]], str], Awaitable[None]]
# A probe of one of the loop's own dependencies: returns when it answers,
# raises (Unavailable) when it does not.
Dependency = Callable[[], Awaitable[None]]
# Labels of datapolis_events_consumed_total: handled, parked on the dead
# letters, or handed to the handler's own park path.
CONSUMED_OUTCOMES = ("processed", "dead_lettered", "parked")


# Between attempts at one record: short, since the bound is what parks it.
RECORD_BACKOFF = Backoff(initial_s=0.2, max_s=5.0, jitter_s=0.2)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one record's transient failures are retried before it is
    parked: at most ``max_attempts`` attempts and ``max_elapsed_s`` seconds,
    whichever comes first, waiting ``backoff`` between attempts."""

    max_attempts: int = 10
    max_elapsed_s: float = 60.0
    backoff: Backoff = RECORD_BACKOFF

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.consumer_retry_attempts,
            max_elapsed_s=settings.consumer_retry_max_s,
        )

    def exhausted(self, attempts: int, elapsed_s: float) -> bool:
        return attempts >= self.max_attempts or elapsed_s >= self.max_elapsed_s


@dataclass
class _Retrying:
    """The record (or batch) a loop is retrying, for readiness."""

    where: str
    since: float
    attempts: int = 0
    error: str = ""
    # Set while the loop waits for its own infrastructure.
    paused_by: str | None = None


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
    and the partition moves on. A transient failure is retried within
    ``retry`` (default from the settings' ``consumer_retry_*``), then the
    record is parked (``park``, or the dead letters) and the partition moves
    on, unless one of the loop's ``dependencies`` (its producer's Kafka is
    always one) is down: then the loop holds the record until they answer.

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
        retry: RetryPolicy | None = None,
        park: Park | None = None,
        dependencies: Sequence[Dependency] = (),
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
        self._retry_policy = retry or RetryPolicy.from_settings(settings)
        self._park = park
        self._dependencies = [producer.ping, *dependencies]
        self._retrying_now: _Retrying | None = None
        self._track_behind = track_behind
        self._last_progress = time.monotonic()
        self._assignment = _Assignment()
        # Why the last attempt to start the Kafka consumer failed (a refused
        # password, a TLS error, no broker), until one succeeds.
        self._connect_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._metrics = metrics
        if metrics is not None:  # the series exist, at 0, before the first record
            for outcome in CONSUMED_OUTCOMES:
                metrics.events_consumed.labels(name, outcome)
        self.processed = 0
        self.dead_lettered = 0
        self.parked = 0
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
        if (joining := self._joining_problem()) is not None:
            return joining
        if self._retrying_now is not None:
            return self._retry_problem(self._retrying_now)
        idle = time.monotonic() - self._last_progress
        if idle > self._stuck_after_s:
            return f"no progress for {idle:.0f}s"
        return None

    def _joining_problem(self) -> str | None:
        if self._connect_error is not None:
            return f"cannot connect to Kafka: {self._connect_error}"
        if not self._assignment.received:
            return "waiting for its partitions (joining its consumer group)"
        return None

    def _retry_problem(self, retrying: _Retrying) -> str | None:
        """Paused for its infrastructure, or retrying one record for longer
        than ``stuck_after_s`` (a retry policy longer than that)."""
        for_s = time.monotonic() - retrying.since
        if retrying.paused_by is not None:
            return f"paused at {retrying.where} for {for_s:.0f}s: {retrying.paused_by}"
        if for_s > self._stuck_after_s:
            return (
                f"retrying {retrying.where} for {for_s:.0f}s "
                f"({retrying.attempts} attempts): {retrying.error}"
            )
        return None

    async def _run_forever(self) -> None:
        await keep_running(
            self._consume_until_failure,
            doing=f"consumer {self.name} (Kafka at {describe(self._settings)})",
            backoff=Backoff(initial_s=0.5, max_s=10.0),
        )

    async def _consume_until_failure(self) -> None:
        """One consumer's life: join the group and consume until something
        fails; the caller starts a new one after a backoff."""
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
            try:
                await consumer.start()
            except KafkaError as exc:
                self._connect_error = repr(exc)
                raise
            self._connect_error = None
            await self._consume(consumer)
        except Exception as exc:
            if not isinstance(exc, KafkaError | Unavailable):
                # Not the broker being away: a bug worth its traceback.
                log.exception("consumer %s failed", self.name)
            raise
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
        """Run ``attempt`` until it succeeds, fails for a reason other than a
        dependency being down (dead letters), or keeps failing transiently
        beyond the retry policy (parked); never returns without one of these
        being durable, so the caller may commit."""
        state = _Retrying(where, since=time.monotonic())
        self._retrying_now = state
        token = event_id_var.set(where)
        try:
            while True:
                try:
                    await attempt()
                except TRANSIENT_ERRORS as exc:
                    state.attempts += 1
                    state.error = repr(exc)
                except Exception as exc:
                    # The records themselves are bad (or the handler cannot
                    # process them): park them, say where they were, move on.
                    reason = exc.message if isinstance(exc, InvalidInput) else repr(exc)
                    log.exception("consumer %s: dead-lettering %s: %s", self.name, where, reason)
                    if await self._settle(state, records, reason, bad_records=True):
                        return
                    continue
                else:
                    self.processed += len(records)
                    self._count("processed", len(records))
                    return
                elapsed = time.monotonic() - state.since
                if self._retry_policy.exhausted(state.attempts, elapsed):
                    reason = (
                        f"still failing after {state.attempts} attempts in {elapsed:.0f}s: "
                        f"{state.error}"
                    )
                    log.warning("consumer %s: giving up on %s, %s", self.name, where, reason)
                    if await self._settle(state, records, reason, bad_records=False):
                        return
                    continue
                delay = self._retry_policy.backoff.delay_s(state.attempts)
                log.warning(
                    "consumer %s: transient failure at %s (attempt %d), retrying in %.1fs: %s",
                    self.name,
                    where,
                    state.attempts,
                    delay,
                    state.error,
                )
                await asyncio.sleep(delay)
        finally:
            event_id_var.reset(token)
            self._retrying_now = None
            self._last_progress = time.monotonic()

    async def _settle(
        self,
        state: _Retrying,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        reason: str,
        *,
        bad_records: bool,
    ) -> bool:
        """Park ``records``: bad ones on the dead letters; those whose
        transient failures outlasted the retry policy through the handler's
        park path (default: the dead letters too), unless the loop's own
        infrastructure is down, which is then the likelier culprit. True when
        parked; False after waiting for the infrastructure, and the record
        gets a fresh retry budget: its failures were not its own."""
        problem = None if bad_records else await self._dependency_problem()
        if problem is None:
            try:
                if bad_records or self._park is None:
                    await self._producer.send_many(
                        [dead_letter_record(r, consumer=self.name, error=reason) for r in records]
                    )
                    self.dead_lettered += len(records)
                    self._count("dead_lettered", len(records))
                else:
                    assert self._park is not None
                    await self._park(records, reason)
                    self.parked += len(records)
                    self._count("parked", len(records))
                return True
            except TRANSIENT_ERRORS as exc:
                problem = f"could not park the records: {exc!r}"
        await self._wait_for_dependencies(state, problem)
        return False

    async def _dependency_problem(self) -> str | None:
        """Why one of the loop's own dependencies does not answer, or None."""
        for probe in self._dependencies:
            try:
                await probe()
            except Exception as exc:
                return exc.message if isinstance(exc, Unavailable) else repr(exc)
        return None

    async def _wait_for_dependencies(self, state: _Retrying, problem: str) -> None:
        """Hold the record (no commit, no park) until the loop's dependencies
        answer; readiness says the loop is paused and why. While it waits
        longer than the group's max.poll.interval.ms, Kafka hands the
        partition to another member, which meets the same outage: no commit
        happened, so the record is redelivered, never lost."""
        log.warning("consumer %s: paused at %s: %s", self.name, state.where, problem)
        state.paused_by = problem
        since = time.monotonic()
        current: str | None = problem
        while current is not None:
            await asyncio.sleep(self._retry_policy.backoff.max_s)
            current = await self._dependency_problem()
            if current is not None:
                state.paused_by = current
        log.info(
            "consumer %s: dependencies answer again after %.0fs; retrying %s",
            self.name,
            time.monotonic() - since,
            state.where,
        )
        state.paused_by = None
        state.attempts = 0
        state.since = time.monotonic()

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
