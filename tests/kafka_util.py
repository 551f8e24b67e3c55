"""Reading what landed on a topic, with a plain aiokafka consumer."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, ConsumerRecord


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
