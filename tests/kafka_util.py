"""Reading what landed on a topic, with a plain aiokafka consumer."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout_s: float = 15.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topic`` from the beginning, once ``expect`` arrived or
    the timeout passed (then the test's assertion reports what is missing)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for batch in batches.values():
                records.extend(batch)
        # A short grace period shows records beyond those expected (duplicates).
        batches = await consumer.getmany(timeout_ms=300)
        for batch in batches.values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


class TopicTail:
    """What a test adds to a shared topic (the dead letters, the ingest
    events): positions are taken before the test acts, and ``read`` returns
    the records after them, reading up to the topic's current end.

    Unlike reading from the beginning within a time window, this does not
    depend on how much earlier runs left on a long-lived broker."""

    def __init__(self, bootstrap: str, topic: str, start: dict[TopicPartition, int]) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._start = start

    @classmethod
    async def at_end(cls, bootstrap: str, topic: str) -> TopicTail:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return cls(bootstrap, topic, dict(ends))

    async def read(self, *, timeout_s: float = 10.0) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record after the positions taken, up to the end as it is now."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await consumer.start()
        records: list[ConsumerRecord[bytes, bytes]] = []
        try:
            tps = list(self._start)
            if not tps:
                return records
            consumer.assign(tps)
            for tp, offset in self._start.items():
                consumer.seek(tp, offset)
            ends = await consumer.end_offsets(tps)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
        finally:
            await consumer.stop()
        return records


async def eventually(check: object, *, timeout_s: float = 10.0, interval_s: float = 0.1) -> None:
    """Await ``check()`` (sync or async, returns truthy) until it holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def skip_history(
    bootstrap: str,
    topic: str,
    group_ids: list[str],
    *,
    ends: dict[TopicPartition, int] | None = None,
) -> None:
    """Start ``group_ids`` at the current end of the shared ``topic`` (or at
    ``ends``, taken earlier with :func:`topic_ends`): a notify deployed now,
    rather than one reading through what every earlier test left on a
    long-lived broker (a backlog of thousands of events)."""
    if ends is None:
        ends = await topic_ends(bootstrap, topic)
    for group_id in group_ids:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(list(ends))
            await consumer.commit({tp: OffsetAndMetadata(end, "") for tp, end in ends.items()})
        finally:
            await consumer.stop()


async def topic_ends(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """The next offset of every partition of ``topic`` now."""
    return (await TopicTail.at_end(bootstrap, topic))._start
