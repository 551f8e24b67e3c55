"""The project's producer: idempotent, acks=all, group commit per partition.

aiokafka's errors are translated into :class:`Unavailable` (retry later) or,
for a record larger than Kafka accepts, :class:`TooLarge` with the code
``record-too-large`` (retrying cannot help), so callers never handle a client
library's exception types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordTooLargeError,
    UnknownProducerId,
)
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata

from datapolis_shared.errors import TooLarge, Unavailable
from datapolis_shared.events.base import Event
from datapolis_shared.events.cloudevents import Headers, to_structured
from datapolis_shared.kafka.options import client_options
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

# After these the idempotent producer's sequence is broken for good (typically:
# batches expired while the broker was down); only a new producer id helps.
FATAL_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
)

# A record Kafka refuses for its size, whoever noticed (the client before
# sending, or the broker against the topic's max.message.bytes): permanent.
SIZE_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)
RECORD_TOO_LARGE = "record-too-large"
# aiokafka's default max_request_size.
DEFAULT_MAX_REQUEST_SIZE = 1_048_576


def record_size(value: bytes, key: bytes | None, headers: Headers) -> int:
    """An upper bound of a record's size in a Kafka batch (value, key,
    headers and their framing), as the client measures it."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def _too_large(max_bytes: int | None = None) -> TooLarge:
    limit = f" ({max_bytes} bytes)" if max_bytes is not None else ""
    return TooLarge(
        "a record is larger than Kafka accepts: the topic's max.message.bytes "
        f"or the producer's max_request_size{limit}",
        code=RECORD_TOO_LARGE,
    )


def _retrieve(future: asyncio.Future[None]) -> None:
    """A group's failure may outlive its callers: mark it seen, not leaked."""
    if not future.cancelled():
        future.exception()


@dataclass
class _Group:
    """Records of concurrent callers bound for one partition, written together."""

    future: asyncio.Future[None]
    created: float
    records: list[OutgoingRecord] = field(default_factory=list)


@dataclass(slots=True)
class OutgoingRecord:
    """A record to write. Not frozen: ingest builds one per record, 20,000+
    a second, and a frozen dataclass's ``__init__`` costs five times as much
    (each field goes through ``object.__setattr__``)."""

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
            raise Unavailable("Kafka is unreachable; try again later") from exc
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
            raise Unavailable("Kafka did not answer a metadata request") from exc

    async def send_many(self, records: Sequence[OutgoingRecord]) -> list[RecordMetadata]:
        """Send records and wait until Kafka acknowledged all of them (acks=all).

        Either every record is acknowledged or :class:`Unavailable` is raised; in
        the latter case some may still have been written, so callers keep
        their records idempotent (ids, keys) and retry. A record larger than
        :attr:`max_request_size` raises :class:`TooLarge` before anything is
        sent.
        """
        if not self._started:
            raise Unavailable("Kafka producer not started", retry_after_s=5)
        if self._broken:
            await self._renew(self._generation)
        self._check_sizes(records)
        generation, producer = self._generation, self._producer
        try:
            async with asyncio.timeout(self._settings.delivery_timeout_s):
                futures = [
                    await producer.send(r.topic, r.value, key=r.key, headers=r.headers)
                    for r in records
                ]
                return list(await asyncio.gather(*futures))
        except (KafkaError, TimeoutError) as exc:
            raise await self._failure(exc, generation) from exc

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
        self._check_sizes(records)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        waits: set[asyncio.Future[None]] = set()
        groups = self._open_groups
        # Per topic, not per record: awaiting a coroutine for each of 20,000+
        # records a second showed in profiles.
        partitions_of: dict[str, list[int]] = {}
        key_hashes = self._key_hashes
        for record in records:
            topic = record.topic
            partitions = partitions_of.get(topic)
            if partitions is None:
                partitions = partitions_of[topic] = await self._partitions_for(topic, now)
            key = record.key
            hashed = key_hashes.get(key) if key is not None else None
            if hashed is None:
                tp = (topic, self._partition(partitions, key))
            else:  # the common case, without a call
                tp = (topic, partitions[hashed % len(partitions)])
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

    async def _partitions_for(self, topic: str, now: float) -> list[int]:
        cached = self._partitions.get(topic)
        if cached is None or now - cached[0] > 30:
            found = await self._producer.partitions_for(topic)
            cached = self._partitions[topic] = (now, sorted(found))
        return cached[1]

    def _partition(self, partitions: list[int], key: bytes | None) -> int:
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
                    failure: Exception = exc
                    if not isinstance(exc, Unavailable | TooLarge):
                        # The caller gets a sentence; the cause stays for the log.
                        failure = Unavailable("the records could not be written")
                        failure.__cause__ = exc
                    group.future.set_exception(failure)
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
                # Closed, the batch is complete: aiokafka sends it at once
                # instead of letting it linger (linger_ms) for appends that
                # will never come, which added that much to every group.
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError) as exc:
            raise await self._failure(exc, generation) from exc

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
                raise Unavailable("Kafka is unreachable; try again later") from exc
            self._broken = False

    async def _failure(
        self, exc: KafkaError | TimeoutError, generation: int
    ) -> TooLarge | Unavailable:
        """What a failed write tells its caller, after repairing the producer
        when the failure broke its idempotent sequence."""
        if isinstance(exc, SIZE_ERRORS):
            await self._after_size_error(exc, generation)
            return _too_large()
        if isinstance(exc, FATAL_PRODUCER_ERRORS):
            await self._renew(generation)
        return Unavailable("Kafka did not acknowledge the records; try again later")

    async def _after_size_error(self, exc: BaseException, generation: int) -> None:
        """When the broker refuses an oversized record (the topic's
        max.message.bytes), aiokafka has already counted its batch in the
        partition's idempotent sequence and the broker has not, so the next
        write to that partition would fail out of order: a new producer id
        starts the sequence afresh. (:meth:`_check_sizes` keeps the client's
        own refusal, which takes no sequence number, from happening.)"""
        log.warning("Kafka refused a record for its size: %r", exc)
        await self._renew(generation)

    @property
    def max_request_size(self) -> int:
        """The largest record, framing included, this producer sends."""
        return int(self._options.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))

    def _check_sizes(self, records: Sequence[OutgoingRecord]) -> None:
        """Refuse the whole call before any record of it is queued: a record
        the client would refuse mid-way would leave the others half sent."""
        limit = self.max_request_size
        for r in records:
            # The cheap bound first: most records are far below the limit.
            if (
                len(r.value) + len(r.key or b"") + 4096 > limit
                and record_size(r.value, r.key, r.headers) > limit
            ):
                raise _too_large(limit)

    async def send(self, record: OutgoingRecord) -> RecordMetadata:
        return (await self.send_many([record]))[0]

    async def send_event(self, event: Event, *, id: str | None = None) -> RecordMetadata:
        envelope = event.to_cloudevent(id=id)
        value, headers = to_structured(envelope)
        return await self.send(OutgoingRecord(event.topic, value, event.key().encode(), headers))
