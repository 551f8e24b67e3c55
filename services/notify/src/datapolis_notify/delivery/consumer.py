"""The Kafka edge of the engine: reads the dataset topics, offers each
record to the engine, and commits offsets only up to the lowest record
whose outcome is not yet durable (see ``offsets``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from datapolis_notify.delivery.engine import DeliveryEngine
from datapolis_notify.delivery.offsets import OffsetTracker
from datapolis_notify.delivery.records import SourceRecord, decode_headers
from datapolis_notify.settings import DeliverySettings
from datapolis_shared.kafka.options import client_options
from datapolis_shared.retry import Backoff, keep_running
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

# Records held in memory (offered, outcome not durable) beyond which reading
# pauses: a bound on memory, not a normal state.
MAX_HELD = 100_000


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    def __init__(self, reader: DatasetReader) -> None:
        self.reader = reader

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Commit what is settled while the partitions are still ours.
        await self.reader.commit()
        self.reader.tracker.forget({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.reader.assigned = True


class DatasetReader:
    def __init__(
        self, kafka: KafkaSettings, settings: DeliverySettings, engine: DeliveryEngine
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.engine = engine
        self.tracker = OffsetTracker()
        self.assigned = False
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._last_progress = time.monotonic()
        self._error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            keep_running(
                self._consume,
                doing="notify delivery consumer",
                backoff=Backoff(initial_s=0.5, max_s=10.0),
            ),
            name="delivery-consumer",
        )
        self._commit_task = asyncio.create_task(self._commit_loop(), name="delivery-commits")

    async def stop(self) -> None:
        for task in (self._task, self._commit_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def problem(self) -> str | None:
        if self._task is None:
            return "not started"
        if self._task.done():
            return "stopped"
        if self._error is not None:
            return f"Kafka: {self._error}"
        if not self.assigned:
            return "waiting for its partitions (joining its consumer group)"
        return None

    async def partitions(self, topic: str) -> int | None:
        consumer = self.consumer
        if consumer is None:
            return None
        found = consumer.partitions_for_topic(topic)
        return len(found) if found else None

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.kafka),
            group_id=self.settings.group_id,
            client_id=f"{self.settings.group_id}-reader",
            enable_auto_commit=False,
            # A new dataset topic is read from its start: its first records
            # are as owed as the later ones (subscriptions still receive
            # only records newer than themselves).
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            metadata_max_age_ms=3_000,
        )
        consumer.subscribe(pattern=self.settings.topic_pattern, listener=_Rebalance(self))
        try:
            try:
                await consumer.start()
            except KafkaError as exc:
                self._error = repr(exc)
                raise
            self._error = None
            self.consumer = consumer
            await self.engine.loaded.wait()
            while True:
                if self.tracker.held() > MAX_HELD:
                    await self._wait_for_room()
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                self._last_progress = time.monotonic()
                for records in batches.values():
                    for raw in records:
                        self._offer(raw)
        finally:
            self.consumer = None
            self.assigned = False
            with contextlib.suppress(Exception):
                await consumer.stop()
            self.tracker = OffsetTracker()

    async def _wait_for_room(self) -> None:
        # Polled: records are released from many places (log flushes, queue
        # writes), a wake-up for each would cost more than this rare wait.
        while self.tracker.held() > MAX_HELD:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def _offer(self, raw: ConsumerRecord[bytes, bytes]) -> None:
        topic: str = raw.topic
        partition: int = raw.partition
        offset: int = raw.offset
        try:
            value = json.loads(raw.value) if raw.value is not None else None
        except ValueError:
            # Ingest writes only valid JSON: a record that is not cannot be
            # delivered to anyone; it is logged and passed.
            log.warning("delivery: %s/%d@%d is not JSON; skipped", topic, partition, offset)
            self.tracker.read(topic, partition, offset, 0)
            return
        key_bytes = raw.key
        record = SourceRecord(
            topic=topic,
            partition=partition,
            offset=offset,
            key=None if key_bytes is None else key_bytes.decode("utf-8", "replace"),
            value=value,
            headers=decode_headers(raw.headers),
            timestamp_ms=int(raw.timestamp or 0),
        )
        self.engine.offer(record, lambda n: self.tracker.read(topic, partition, offset, n))

    async def commit(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        offsets = self.tracker.to_commit()
        if not offsets:
            return
        try:
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except KafkaError as exc:
            log.warning("delivery: commit failed (retried at the next one): %r", exc)
            return
        self.tracker.committed(offsets)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            with contextlib.suppress(Exception):
                await self.commit()
