"""Kafka on aiokafka: the project's producer, topic provisioning, dead letters
and the consumer loop every service uses.

aiokafka's errors are translated here into :class:`Unavailable`, so callers
never handle a client library's exception types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)
from aiokafka.partitioner import murmur2
from aiokafka.structs import RecordMetadata

from datapolis_shared.errors import InvalidInput, Unavailable
from datapolis_shared.events.base import Event
from datapolis_shared.events.cloudevents import Headers, to_structured
from datapolis_shared.logs import event_id_var
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

DEAD_LETTERS = "datapolis.deadletters"
# After these the idempotent producer's sequence is broken for good (typically:
# batches expired while the broker was down); only a new producer id helps.
FATAL_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
)
TOPIC_ALREADY_EXISTS = 36


def _retrieve(future: asyncio.Future[None]) -> None:
    """A group's failure may outlive its callers: mark it seen, not leaked."""
    if not future.cancelled():
        future.exception()


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        # The cluster's CA (Strimzi issues its own) or the system trust store.
        options["ssl_context"] = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options


@dataclass
class _Group:
    """Records of concurrent callers bound for one partition, written together."""

    future: asyncio.Future[None]
    created: float
    records: list[OutgoingRecord] = field(default_factory=list)


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


class Producer:
    """An idempotent producer with acks=all whose sends return only once every
    in-sync replica has the record, or raise :class:`Unavailable`."""

    def __init__(self, settings: KafkaSettings, *, client_id: str, **overrides: Any) -> None:
        self._settings = settings
        options = {
            **client_options(settings),
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "max_batch_size": 256 * 1024,
            "compression_type": None,
            **overrides,
        }
        self._options = options
        self._producer = AIOKafkaProducer(**options)
        self._started = False
        self._generation = 0
        self._restart_lock = asyncio.Lock()
        self._broken = False
        # send_batched: one open group and at most one writer per partition.
        self._open_groups: dict[tuple[str, int], _Group] = {}
        self._writers: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._key_hashes: dict[bytes, int] = {}
        self._round_robin = 0

    async def start(self) -> None:
        """Start; keeps retrying in the background-friendly way the caller chooses.

        Raises :class:`Unavailable` when no broker answers, so an app can start
        and report not-ready instead of crashing.
        """
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise Unavailable(f"Kafka is unreachable: {exc!r}") from exc
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    async def stop(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await asyncio.wait_for(self._producer.stop(), timeout=10)

    async def ping(self) -> None:
        """A real metadata request to the cluster; raises :class:`Unavailable`."""
        if not self._started:
            raise Unavailable("Kafka producer not started")
        try:
            await asyncio.wait_for(
                self._producer.client.fetch_all_metadata(),
                timeout=self._settings.readiness_timeout_s,
            )
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"Kafka metadata request failed: {exc!r}") from exc

    async def send_many(self, records: Sequence[OutgoingRecord]) -> list[RecordMetadata]:
        """Send records and wait until Kafka acknowledged all of them (acks=all).

        Either every record is acknowledged or :class:`Unavailable` is raised; in
        the latter case some may still have been written, so callers keep
        their records idempotent (ids, keys) and retry.
        """
        if not self._started:
            raise Unavailable("Kafka producer not started", retry_after_s=5)
        if self._broken:
            await self._renew(self._generation)
        generation, producer = self._generation, self._producer
        try:
            async with asyncio.timeout(self._settings.delivery_timeout_s):
                futures = [
                    await producer.send(r.topic, r.value, key=r.key, headers=r.headers)
                    for r in records
                ]
                return list(await asyncio.gather(*futures))
        except (KafkaError, TimeoutError) as exc:
            if isinstance(exc, FATAL_PRODUCER_ERRORS):
                await self._renew(generation)
            raise Unavailable(f"Kafka did not acknowledge the records: {exc!r}") from exc

    async def send_batched(self, records: Sequence[OutgoingRecord]) -> None:
        """Like :meth:`send_many` (acks=all, all or :class:`Unavailable`), for
        high volumes: records are grouped per partition with those of
        concurrent callers and written as few large batches, one in flight per
        partition while the next one fills (group commit). Partitions are
        chosen as Kafka's default partitioner does (murmur2 of the key)."""
        if not self._started:
            raise Unavailable("Kafka producer not started", retry_after_s=5)
        if self._broken:
            await self._renew(self._generation)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        waits: set[asyncio.Future[None]] = set()
        groups = self._open_groups
        for record in records:
            tp = (record.topic, await self._partition(record.topic, record.key, now))
            group = groups.get(tp)
            if group is None:
                group = groups[tp] = _Group(loop.create_future(), now)
                group.future.add_done_callback(_retrieve)
                if tp not in self._writers:
                    self._writers[tp] = asyncio.create_task(self._write_groups(tp))
            group.records.append(record)
            waits.add(group.future)
        if not waits:
            return
        done, pending = await asyncio.wait(waits, timeout=self._settings.delivery_timeout_s)
        if pending:
            raise Unavailable(
                f"Kafka did not acknowledge the records within "
                f"{self._settings.delivery_timeout_s:g}s"
            )
        for future in done:
            future.result()

    async def _partition(self, topic: str, key: bytes | None, now: float) -> int:
        cached = self._partitions.get(topic)
        if cached is None or now - cached[0] > 30:
            found = await self._producer.partitions_for(topic)
            cached = self._partitions[topic] = (now, sorted(found))
        partitions = cached[1]
        if key is None:
            self._round_robin += 1
            return partitions[self._round_robin % len(partitions)]
        hashed = self._key_hashes.get(key)
        if hashed is None:
            if len(self._key_hashes) > 100_000:
                self._key_hashes.clear()
            hashed = self._key_hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[hashed % len(partitions)]

    async def _write_groups(self, tp: tuple[str, int]) -> None:
        try:
            while (group := self._open_groups.pop(tp, None)) is not None:
                if time.monotonic() - group.created > self._settings.delivery_timeout_s:
                    # Its callers have had their answer (Unavailable): do not
                    # write late what they were told failed, nor pile it up.
                    group.future.set_exception(Unavailable("Kafka did not acknowledge in time"))
                    continue
                try:
                    await self._write_group(tp, group.records)
                except Exception as exc:
                    if not isinstance(exc, Unavailable):
                        exc = Unavailable(f"the records could not be written: {exc!r}")
                    group.future.set_exception(exc)
                else:
                    group.future.set_result(None)
        finally:
            self._writers.pop(tp, None)

    async def _write_group(self, tp: tuple[str, int], records: list[OutgoingRecord]) -> None:
        generation, producer = self._generation, self._producer
        topic, partition = tp
        try:
            async with asyncio.timeout(self._settings.delivery_timeout_s):
                futures = []
                batch = producer.create_batch()
                for r in records:
                    if (
                        batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
                        is None
                    ):
                        futures.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError) as exc:
            if isinstance(exc, FATAL_PRODUCER_ERRORS):
                await self._renew(generation)
            raise Unavailable(f"Kafka did not acknowledge the records: {exc!r}") from exc

    async def _renew(self, failed_generation: int) -> None:
        """Replace a producer whose idempotence state is broken (once, however
        many sends saw it fail); the callers' records were not acknowledged
        and their retry goes through the new producer."""
        async with self._restart_lock:
            if failed_generation != self._generation or not self._started:
                return
            log.warning("Kafka producer lost its idempotent sequence; starting a new one")
            old, self._producer = self._producer, AIOKafkaProducer(**self._options)
            self._generation += 1
            self._broken = True
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await asyncio.wait_for(old.stop(), timeout=5)
            try:
                await self._producer.start()
            except KafkaError as exc:
                # The next send tries again with yet another producer.
                raise Unavailable(f"Kafka is unreachable: {exc!r}") from exc
            self._broken = False

    async def send(self, record: OutgoingRecord) -> RecordMetadata:
        return (await self.send_many([record]))[0]

    async def send_event(self, event: Event, *, id: str | None = None) -> RecordMetadata:
        envelope = event.to_cloudevent(id=id)
        value, headers = to_structured(envelope)
        return await self.send(OutgoingRecord(event.topic, value, event.key().encode(), headers))


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


def control_topic_specs() -> list[TopicSpec]:
    forever = {"retention.ms": "-1", "cleanup.policy": "delete"}
    thirty_days = {"retention.ms": str(30 * 24 * 3600 * 1000)}
    return [
        # Catalog and consent events are deltas that share a key per dataset or
        # agreement (registered, then schema added, amended...): compaction
        # would keep only the last one and a replaying consumer would miss the
        # rest. They are the system's memory, so they are kept forever.
        TopicSpec("datapolis.catalog.events", 3, forever),
        TopicSpec("datapolis.consent.events", 3, forever),
        TopicSpec("datapolis.ingest.events", 3, {"retention.ms": str(7 * 24 * 3600 * 1000)}),
        TopicSpec("datapolis.ingest.rejected", 3, thirty_days),
        TopicSpec(DEAD_LETTERS, 1, thirty_days),
    ]


@contextlib.asynccontextmanager
async def admin_client(settings: KafkaSettings, failing: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed after; Kafka errors become
    :class:`Unavailable` ("<failing> failed: ...")."""
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="datapolis-admin")
    try:
        await admin.start()
    except KafkaError as exc:
        raise Unavailable(f"Kafka is unreachable: {exc!r}") from exc
    try:
        yield admin
    except KafkaError as exc:
        raise Unavailable(f"{failing} failed: {exc!r}") from exc
    finally:
        await admin.close()


async def ensure_topics(settings: KafkaSettings, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    async with admin_client(settings, "topic creation") as admin:
        existing = set(await admin.list_topics())
        wanted = [s for s in specs if s.name not in existing]
        if not wanted:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=s.config,
                )
                for s in wanted
            ]
        )
        created = []
        for name, code, *rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                message = rest[0] if rest else ""
                raise Unavailable(f"could not create topic {name}: error {code} {message}")
        return created


# DescribeConfigs (v1+) config_source of a value set on the topic itself.
DYNAMIC_TOPIC_CONFIG = 1


@dataclass
class TopicChanges:
    """What :func:`converge_topics` did, and what it could not do."""

    created: list[str] = field(default_factory=list)
    # Topic name -> its partition count now.
    partitions_added: dict[str, int] = field(default_factory=dict)
    configs_altered: list[str] = field(default_factory=list)
    # Topic name -> partitions it has beyond the wanted count: Kafka cannot
    # remove partitions, so these are reported, never "fixed".
    extra_partitions: dict[str, int] = field(default_factory=dict)


def topic_config_update(
    wanted: dict[str, str], effective: dict[str, str | None], own: dict[str, str]
) -> dict[str, str] | None:
    """The full config to write on a topic so it has ``wanted``, or None when
    its ``effective`` values already match. AlterConfigs (aiokafka has no
    IncrementalAlterConfigs) replaces every value set on the topic, so the
    topic's ``own`` values are written back with the wanted ones on top."""
    if all(effective.get(name) == value for name, value in wanted.items()):
        return None
    return {**own, **wanted}


async def converge_topics(settings: KafkaSettings, specs: Iterable[TopicSpec]) -> TopicChanges:
    """Make Kafka match ``specs``: create missing topics, add partitions up to
    the wanted count and set the wanted configs on existing ones (keeping the
    other values set on them). Raises :class:`Unavailable` when Kafka cannot."""
    specs = list(specs)
    changes = TopicChanges(created=await ensure_topics(settings, specs))
    existing = [s for s in specs if s.name not in changes.created]
    if not existing:
        return changes
    async with admin_client(settings, "topic convergence") as admin:
        await _converge_partitions(admin, existing, changes)
        await _converge_configs(admin, existing, changes)
    return changes


async def _converge_partitions(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], changes: TopicChanges
) -> None:
    counts: dict[str, int] = {}
    for described in await admin.describe_topics([s.name for s in specs]):
        if described["error_code"]:
            raise Unavailable(
                f"could not describe topic {described['topic']}: error {described['error_code']}"
            )
        counts[described["topic"]] = len(described["partitions"])
    grow = {s.name: s.partitions for s in specs if counts[s.name] < s.partitions}
    if grow:
        await admin.create_partitions({n: NewPartitions(c) for n, c in grow.items()})
        changes.partitions_added.update(grow)
    changes.extra_partitions.update(
        {s.name: counts[s.name] for s in specs if counts[s.name] > s.partitions}
    )


async def _converge_configs(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], changes: TopicChanges
) -> None:
    effective: dict[str, dict[str, str | None]] = {}
    own: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    ):
        for code, message, _type, name, entries in response.resources:
            if code:
                raise Unavailable(f"could not describe topic {name}: error {code} {message}")
            effective[name] = {e[0]: e[1] for e in entries}
            # Version 0 says is_default where later versions give the source.
            own[name] = {
                e[0]: e[1]
                for e in entries
                if e[1] is not None
                and (e[3] == DYNAMIC_TOPIC_CONFIG if response.API_VERSION >= 1 else not e[3])
            }
    updates = {
        s.name: update
        for s in specs
        if (update := topic_config_update(s.config, effective[s.name], own[s.name])) is not None
    }
    if not updates:
        return
    for response in await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n, c) for n, c in updates.items()]
    ):
        for code, message, _type, name in response.resources:
            if code:
                raise Unavailable(f"could not configure topic {name}: error {code} {message}")
    changes.configs_altered.extend(updates)


def dead_letter_record(
    record: ConsumerRecord[bytes, bytes], *, consumer: str, error: str
) -> OutgoingRecord:
    headers = list(record.headers or ())
    headers += [
        ("dl_consumer", consumer.encode()),
        ("dl_error", error[:2000].encode()),
        ("dl_source_topic", record.topic.encode()),
        ("dl_source_partition", str(record.partition).encode()),
        ("dl_source_offset", str(record.offset).encode()),
    ]
    return OutgoingRecord(DEAD_LETTERS, record.value or b"", record.key, headers)


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
        self._last_progress = time.monotonic()
        self._assignment = _Assignment()
        self._task: asyncio.Task[None] | None = None
        self._metrics = metrics
        if metrics is not None:  # the series exist, at 0, before the first record
            for outcome in CONSUMED_OUTCOMES:
                metrics.events_consumed.labels(name, outcome)
        self.processed = 0
        self.dead_lettered = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name=f"consumer:{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
            for tp, records in batches.items():
                if self._batch_handler is not None:
                    await self._handle_batch(tp.topic, records)
                else:
                    for record in records:
                        await self._handle(record)
                await consumer.commit(
                    {TopicPartition(tp.topic, tp.partition): records[-1].offset + 1}
                )

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
