"""The transactional outbox: a committed change is announced, a rolled-back one
never is, and a relay that dies between publishing and marking loses nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from datapolis_shared.events.catalog import OrganisationRegistered
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.kafka import Producer
from datapolis_shared.postgres import outbox
from datapolis_shared.postgres.pool import Pool
from tests.kafka_util import read_topic


def _event(org_id: str, topic: str) -> OrganisationRegistered:
    class TestEvent(OrganisationRegistered):
        pass

    TestEvent.topic = topic  # type: ignore[misc]
    return TestEvent(org_id=org_id, name="Ville de Lyon", kind="public-authority")


async def test_committed_row_is_published_and_marked(
    pool: Pool, producer: Producer, new_topic, kafka_bootstrap: str
) -> None:
    topic = await new_topic("outbox")
    async with pool.acquire() as conn, conn.transaction():
        event_id = await outbox.enqueue(conn, _event("org-1", topic))

    relay = outbox.OutboxRelay(pool, producer)
    assert await relay.publish_pending() == 1
    assert await relay.backlog() == 0

    records = await read_topic(kafka_bootstrap, topic, expect=1)
    assert [from_structured(r.value).id for r in records] == [event_id]
    assert records[0].key == b"org-1"


async def test_rolled_back_transaction_publishes_nothing(
    pool: Pool, producer: Producer, new_topic, kafka_bootstrap: str
) -> None:
    topic = await new_topic("outbox")
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, _event("org-rolled-back", topic))
            raise RuntimeError("the change failed after the event was written")

    relay = outbox.OutboxRelay(pool, producer)
    assert await relay.publish_pending() == 0
    assert await read_topic(kafka_bootstrap, topic, expect=1, timeout_s=2) == []


class _DiesAfterPublish(outbox.OutboxRelay):
    def _after_publish(self) -> None:
        raise SystemExit("relay killed between publish and mark")


async def test_relay_dying_between_publish_and_mark_republishes(
    pool: Pool, producer: Producer, new_topic, kafka_bootstrap: str
) -> None:
    topic = await new_topic("outbox")
    async with pool.acquire() as conn, conn.transaction():
        event_id = await outbox.enqueue(conn, _event("org-2", topic))

    with pytest.raises(SystemExit):
        await _DiesAfterPublish(pool, producer).publish_pending()
    # The mark was rolled back with the dead relay: the row is still pending.
    assert await outbox.OutboxRelay(pool, producer).backlog() == 1

    survivor = outbox.OutboxRelay(pool, producer)
    assert await survivor.publish_pending() == 1
    assert await survivor.backlog() == 0

    records = await read_topic(kafka_bootstrap, topic, expect=2)
    # At least once: the same event id twice; consumers drop the repeat (inbox).
    assert [from_structured(r.value).id for r in records] == [event_id, event_id]


async def test_running_relay_publishes_on_commit(
    pool: Pool, producer: Producer, new_topic, kafka_bootstrap: str
) -> None:
    topic = await new_topic("outbox")
    relay = outbox.OutboxRelay(pool, producer, poll_interval_s=30)
    relay.start()
    try:
        started = datetime.now(UTC)
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, _event("org-3", topic))
        records = await read_topic(kafka_bootstrap, topic, expect=1, timeout_s=10)
        assert len(records) == 1
        # LISTEN/NOTIFY wakes the relay at commit, long before its 30 s poll.
        assert (datetime.now(UTC) - started).total_seconds() < 10
        assert relay.problem() is None
    finally:
        await relay.stop()
