"""A record larger than Kafka accepts is a permanent error (TooLarge,
``record-too-large``), never a retryable Unavailable, and it leaves the
producer able to write the next record to the same partition: against the
real broker, whether the client (max_request_size) or the broker (the
topic's max.message.bytes) refuses it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from datapolis_shared.errors import TooLarge
from datapolis_shared.kafka import OutgoingRecord, Producer, TopicSpec, ensure_topics
from datapolis_shared.settings import KafkaSettings
from tests.kafka_util import read_topic

Send = Callable[[Producer], Callable[[Sequence[OutgoingRecord]], Awaitable[object]]]
SENDS: dict[str, Send] = {
    "send_many": lambda p: p.send_many,
    "send_batched": lambda p: p.send_batched,
}


@pytest.fixture
async def small_topic(kafka_settings: KafkaSettings) -> AsyncIterator[str]:
    """One partition that takes records of at most 20,000 bytes."""
    name = f"test.size.{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_settings, [TopicSpec(name, 1, {"max.message.bytes": "20000"})])
    yield name
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


@pytest.mark.parametrize("send", SENDS)
async def test_a_record_the_broker_refuses_is_permanent_and_the_next_write_succeeds(
    producer: Producer, small_topic: str, kafka_bootstrap: str, send: str
) -> None:
    write = SENDS[send](producer)
    await write([OutgoingRecord(small_topic, b'{"n": 1}', b"k")])

    with pytest.raises(TooLarge) as refused:
        await write([OutgoingRecord(small_topic, b"x" * 50_000, b"k")])
    assert refused.value.code == "record-too-large"

    await write([OutgoingRecord(small_topic, b'{"n": 2}', b"k")])
    records = await read_topic(kafka_bootstrap, small_topic, expect=2)
    assert [r.value for r in records] == [b'{"n": 1}', b'{"n": 2}']


@pytest.mark.parametrize("send", SENDS)
async def test_a_record_over_the_request_size_is_refused_before_anything_is_sent(
    producer: Producer, new_topic: Callable[..., Awaitable[str]], kafka_bootstrap: str, send: str
) -> None:
    topic = await new_topic()
    write = SENDS[send](producer)
    huge = b"x" * (producer.max_request_size + 1)

    with pytest.raises(TooLarge) as refused:
        # The small record of the same call is not sent either: all or nothing.
        await write([OutgoingRecord(topic, b"first", b"k"), OutgoingRecord(topic, huge, b"k")])
    assert refused.value.code == "record-too-large"

    await write([OutgoingRecord(topic, b"after", b"k")])
    records = await read_topic(kafka_bootstrap, topic, expect=1)
    assert [r.value for r in records] == [b"after"]
