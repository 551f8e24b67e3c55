"""Records produced straight to raw.<slug> are validated by the worker with
the HTTP rules: valid ones reach data.<slug>, invalid ones the dead letters
with their source offset, and offsets are committed once forwarded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from datapolis_ingest.settings import IngestSettings
from datapolis_shared.kafka import OutgoingRecord, Producer
from tests.integration.ingest.conftest import DatasetFactory, reading
from tests.kafka_util import TopicTail, eventually, read_topic


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def worker(ingest_settings: IngestSettings) -> AsyncIterator[IngestSettings]:
    env = {
        **os.environ,
        "INGEST_DEV": "true",
        "INGEST_SERVICE_NAME": ingest_settings.service_name,
        "INGEST_LOG_JSON": "false",
        "INGEST_KAFKA__BOOTSTRAP_SERVERS": ingest_settings.kafka.bootstrap_servers,
        "INGEST_POSTGRES__DSN": ingest_settings.postgres.dsn.get_secret_value(),
        "INGEST_POSTGRES__DB_SCHEMA": ingest_settings.postgres.db_schema,
        # Its own probe port: the default (8000) may be another worker's.
        "INGEST_WORKER_HTTP__PORT": str(_free_port()),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "datapolis_ingest", "worker", env=env
    )
    yield ingest_settings
    with contextlib.suppress(ProcessLookupError):  # it may have died: the test says why
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=20)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp) or 0
    finally:
        await consumer.stop()


async def test_raw_records_are_validated_forwarded_and_committed(
    worker: IngestSettings,
    producer: Producer,
    register_dataset: DatasetFactory,
    kafka_bootstrap: str,
    ingest_rejected_tail: TopicTail,
    ingest_events_tail: TopicTail,
) -> None:
    publisher_id = f"org-{worker.service_name}"
    dataset = await register_dataset(publisher_id)
    good = [reading(0), reading(1)]
    anonymous = {k: v for k, v in reading(2).items() if k != "id"}
    invalid = reading(3, kwh=-5)
    values = [orjson.dumps(r) for r in (good[0], invalid, good[1], anonymous)] + [b"{broken"]
    # One partition, so the offsets below are known.
    await producer.send_many(
        [OutgoingRecord(dataset.raw_topic, v, b"producer-key") for v in values]
    )

    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=3, timeout_s=40)
    assert sorted(r.value for r in records) == sorted(
        [values[0], values[2], values[3]]
    )  # forwarded byte for byte
    by_id = {dict(r.headers)["ce_id"].decode(): r for r in records}
    assert set(by_id) >= {good[0]["id"], good[1]["id"]}
    (generated,) = set(by_id) - {good[0]["id"], good[1]["id"]}
    assert generated.startswith(f"{dataset.raw_topic}-")  # topic-partition-offset: stable on replay
    for record in records:
        assert record.key == orjson.loads(record.value)["meter_id"].encode()
        assert dict(record.headers)["ce_type"] == f"org.datapolis.record.{dataset.slug}.v1".encode()

    # Delivery is at least once: a batch retried before its commit (say, the
    # data topic's metadata was not there yet) sends its dead letters again.
    # A repeat carries the same event id, derived from the raw record's
    # position, so readers can drop it.
    by_event_id: dict[str, list[dict[str, object]]] = {}

    async def dead_lettered() -> bool:
        found = await ingest_rejected_tail.read()
        by_event_id.clear()
        for r in found:
            if r.key == dataset.dataset_id.encode():
                envelope = orjson.loads(r.value)
                by_event_id.setdefault(envelope["id"], []).append(envelope["data"])
        return len(by_event_id) >= 2

    await eventually(dead_lettered, timeout_s=20, interval_s=0.5)
    for copies in by_event_id.values():
        assert len({c["source_offset"] for c in copies}) == 1  # type: ignore[misc]
    letters = [copies[0] for copies in by_event_id.values()]
    assert all(letter["channel"] == "kafka" for letter in letters)
    assert all(letter["source_topic"] == dataset.raw_topic for letter in letters)
    raw_partition = [TopicPartition(dataset.raw_topic, p) for p in range(3)]
    offsets = sorted(letter["source_offset"] for letter in letters)  # type: ignore[type-var]
    assert len(offsets) == 2
    assert letters[0]["payload"] in (invalid, "{broken")

    group = f"datapolis-{worker.service_name}-raw-validator"

    async def committed() -> bool:
        total = 0
        for tp in raw_partition:
            total += await _committed(kafka_bootstrap, group, tp)
        return total == len(values)

    await eventually(committed, timeout_s=20, interval_s=0.5)

    async def counted() -> bool:
        found = await ingest_events_tail.read()
        events = [
            orjson.loads(r.value)["data"] for r in found if r.key == dataset.dataset_id.encode()
        ]
        return sum(e["accepted"] for e in events if e["channel"] == "kafka") == 3

    await eventually(counted, timeout_s=40, interval_s=0.5)


async def test_raw_records_nested_too_deep_are_dead_lettered_and_the_rest_forwarded(
    worker: IngestSettings,
    producer: Producer,
    register_dataset: DatasetFactory,
    kafka_bootstrap: str,
    ingest_rejected_tail: TopicTail,
) -> None:
    dataset = await register_dataset(f"org-{worker.service_name}")
    good = orjson.dumps(reading(0))
    values = [
        b'{"meter_id": "m-1", "deep": ' + b"[" * 300 + b"]" * 300 + b"}",  # parsed, then refused
        good,
        b"[" * 2000 + b"]" * 2000,  # too deep even to parse
    ]
    await producer.send_many([OutgoingRecord(dataset.raw_topic, v, b"k") for v in values])

    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=1, timeout_s=40)
    assert [r.value for r in records] == [good]

    letters: list[dict[str, object]] = []

    async def dead_lettered() -> bool:
        found = await ingest_rejected_tail.read()
        letters[:] = [
            orjson.loads(r.value)["data"] for r in found if r.key == dataset.dataset_id.encode()
        ]
        return len({letter["source_offset"] for letter in letters}) >= 2

    await eventually(dead_lettered, timeout_s=40, interval_s=0.5)
    assert {letter["code"] for letter in letters} == {"record-too-deep"}
    assert {letter["payload"] for letter in letters} == {v.decode() for v in (values[0], values[2])}
