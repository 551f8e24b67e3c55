"""Consumers: the same event twice has one effect; a bad record goes to the
dead letters and the records behind it are still processed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from aiokafka import ConsumerRecord

from datapolis_shared.errors import Unavailable
from datapolis_shared.events.base import parse_event
from datapolis_shared.events.catalog import OrganisationRegistered
from datapolis_shared.events.cloudevents import CloudEvent, from_structured, to_structured
from datapolis_shared.kafka import ConsumerLoop, OutgoingRecord, Producer
from datapolis_shared.postgres import inbox
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import KafkaSettings
from tests.kafka_util import TopicTail, eventually

CREATE_EFFECT = "CREATE TABLE organisations (org_id TEXT PRIMARY KEY, seen INT NOT NULL)"
APPLY_EFFECT = """
INSERT INTO organisations (org_id, seen) VALUES ($1, 1)
ON CONFLICT (org_id) DO UPDATE SET seen = organisations.seen + 1
"""


def _record(topic: str, envelope: CloudEvent) -> OutgoingRecord:
    value, headers = to_structured(envelope)
    return OutgoingRecord(
        topic, value, envelope.subject.encode() if envelope.subject else None, headers
    )


def _org_registered_handler(pool: Pool):  # type: ignore[no-untyped-def]
    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        envelope = from_structured(record.value or b"")
        event = parse_event(envelope)
        assert isinstance(event, OrganisationRegistered)
        async with pool.acquire() as conn, conn.transaction():
            if await inbox.first_time(conn, "orgs", envelope.id):
                await conn.execute(APPLY_EFFECT, event.org_id)

    return handle


async def test_same_event_twice_has_one_effect(
    pool: Pool, producer: Producer, new_topic, kafka_settings: KafkaSettings
) -> None:
    await pool.execute(CREATE_EFFECT)
    topic = await new_topic("consumer")
    envelope = OrganisationRegistered(
        org_id="org-twice", name="Métropole", kind="public-authority"
    ).to_cloudevent()
    value, headers = to_structured(envelope)
    # Redelivery as it happens after a crash before commit: the same event again.
    for _ in range(2):
        await producer.send(OutgoingRecord(topic, value, b"org-twice", headers))

    loop = ConsumerLoop(
        kafka_settings,
        name="orgs",
        group_id=f"g-{topic}",
        topics=[topic],
        handler=_org_registered_handler(pool),
        producer=producer,
    )
    loop.start()
    try:
        await eventually(lambda: loop.processed == 2, timeout_s=20)
    finally:
        await loop.stop()
    assert await pool.fetchval("SELECT seen FROM organisations WHERE org_id = 'org-twice'") == 1


async def test_bad_record_is_dead_lettered_and_good_ones_pass(
    pool: Pool,
    producer: Producer,
    new_topic,
    kafka_settings: KafkaSettings,
    dead_letters_tail: TopicTail,
) -> None:
    await pool.execute(CREATE_EFFECT)
    topic = await new_topic("consumer")
    good = [
        OrganisationRegistered(org_id=f"org-{i}", name=f"Org {i}", kind="company").to_cloudevent()
        for i in range(3)
    ]
    await producer.send(_record(topic, good[0]))
    await producer.send(OutgoingRecord(topic, b"{not json", b"poison", []))
    for envelope in good[1:]:
        await producer.send(_record(topic, envelope))

    loop = ConsumerLoop(
        kafka_settings,
        name=f"orgs-{topic}",
        group_id=f"g-{topic}",
        topics=[topic],
        handler=_org_registered_handler(pool),
        producer=producer,
    )
    loop.start()
    try:
        await eventually(lambda: loop.processed == 3 and loop.dead_lettered == 1, timeout_s=20)
    finally:
        await loop.stop()

    seen = await pool.fetch("SELECT org_id FROM organisations ORDER BY org_id")
    assert [r["org_id"] for r in seen] == ["org-0", "org-1", "org-2"]
    dead = [
        r
        for r in await dead_letters_tail.read()
        if dict(r.headers).get("dl_consumer") == f"orgs-{topic}".encode()
    ]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert dead[0].value == b"{not json"
    assert headers["dl_source_topic"] == topic.encode()
    assert headers["dl_source_offset"] == b"1"
    assert b"CloudEvents" in headers["dl_error"]


async def test_offsets_are_committed_only_after_the_effect(
    pool: Pool, producer: Producer, new_topic, kafka_settings: KafkaSettings
) -> None:
    """A consumer that restarts resumes after the last applied event, not before
    and not after: nothing is skipped and nothing is applied twice."""
    await pool.execute(CREATE_EFFECT)
    topic = await new_topic("consumer")
    for i in range(5):
        envelope = OrganisationRegistered(org_id=f"o{i}", name="n", kind="company").to_cloudevent()
        await producer.send(_record(topic, envelope))

    def make_loop() -> ConsumerLoop:
        return ConsumerLoop(
            kafka_settings,
            name="orgs",
            group_id=f"g-{topic}",
            topics=[topic],
            handler=_org_registered_handler(pool),
            producer=producer,
        )

    first = make_loop()
    first.start()
    await eventually(lambda: first.processed == 5, timeout_s=20)
    await first.stop()
    for i in range(5, 8):
        envelope = OrganisationRegistered(org_id=f"o{i}", name="n", kind="company").to_cloudevent()
        await producer.send(_record(topic, envelope))
    second = make_loop()
    second.start()
    try:
        await eventually(lambda: second.processed == 3, timeout_s=20)
    finally:
        await second.stop()
    rows = await pool.fetch("SELECT org_id, seen FROM organisations ORDER BY org_id")
    assert [(r["org_id"], r["seen"]) for r in rows] == [(f"o{i}", 1) for i in range(8)]


async def test_batch_handler_with_a_pattern_retries_then_dead_letters(
    producer: Producer,
    new_topic,
    kafka_settings: KafkaSettings,
    dead_letters_tail: TopicTail,
) -> None:
    """A batch consumer subscribed by pattern: a transient failure is retried
    until it passes, a batch it cannot handle goes to the dead letters whole,
    and the records behind it are still handled."""
    prefix = uuid.uuid4().hex[:8]
    first = await new_topic(f"batchpat-{prefix}")
    second = await new_topic(f"batchpat-{prefix}-b")
    pattern = rf"^batchpat-{prefix}(-b)?\.[0-9a-f]+$"  # this test's two topics only
    handled: list[bytes] = []
    transient_left = 1

    async def handle(topic: str, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        nonlocal transient_left
        if any(r.value == b"poison" for r in records):
            raise ValueError("this batch cannot be handled")
        if transient_left:
            transient_left -= 1
            raise Unavailable("the database is restarting")
        handled.extend(r.value or b"" for r in records)

    await producer.send(OutgoingRecord(first, b"a"))
    await producer.send(OutgoingRecord(second, b"b"))
    loop = ConsumerLoop(
        kafka_settings,
        name=f"batch-{prefix}",
        group_id=f"g-{prefix}",
        pattern=pattern,
        batch_handler=handle,
        producer=producer,
    )
    loop.start()
    try:
        await eventually(lambda: sorted(handled) == [b"a", b"b"], timeout_s=30)
        await producer.send(OutgoingRecord(first, b"poison"))
        await eventually(lambda: loop.dead_lettered == 1, timeout_s=20)
        await producer.send(OutgoingRecord(first, b"c"))
        await eventually(lambda: b"c" in handled, timeout_s=20)
    finally:
        await loop.stop()
    assert transient_left == 0  # the transient failure happened and was retried
    assert sorted(handled) == [b"a", b"b", b"c"]
    dead = [
        r
        for r in await dead_letters_tail.read()
        if dict(r.headers).get("dl_consumer") == f"batch-{prefix}".encode()
    ]
    assert [r.value for r in dead] == [b"poison"]
    assert dict(dead[0].headers)["dl_source_topic"] == first.encode()


def test_a_loop_needs_exactly_one_source_and_one_handler(kafka_settings: KafkaSettings) -> None:
    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        return None

    with pytest.raises(ValueError, match="topics or a pattern"):
        ConsumerLoop(
            kafka_settings,
            name="x",
            group_id="g",
            producer=None,  # type: ignore[arg-type]
            topics=["t"],
            pattern="^t$",
            handler=handle,
        )
    with pytest.raises(ValueError, match="handler or a batch_handler"):
        ConsumerLoop(
            kafka_settings,
            name="x",
            group_id="g",
            producer=None,  # type: ignore[arg-type]
            topics=["t"],
        )
