"""The transactional outbox: a committed change is announced, a rolled-back one
never is, a relay that dies between publishing and marking loses nothing, and
each key's events reach Kafka in the order their transactions committed,
however many relays run (one per API replica) and whichever of them dies."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from datapolis_shared.events.catalog import OrganisationRegistered
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.kafka import Producer
from datapolis_shared.postgres import outbox
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import KafkaSettings
from tests.kafka_util import eventually, read_topic


@cache
def _event_class(topic: str) -> type[OrganisationRegistered]:
    class TestEvent(OrganisationRegistered):
        pass

    TestEvent.topic = topic  # type: ignore[misc]
    return TestEvent


def _event(org_id: str, topic: str, name: str = "Ville de Lyon") -> OrganisationRegistered:
    return _event_class(topic)(org_id=org_id, name=name, kind="public-authority")


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
    async def _after_publish(self) -> None:
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


@contextlib.asynccontextmanager
async def _replica(
    database_url: str,
    schema: str,
    kafka_settings: KafkaSettings,
    relay_class: type[outbox.OutboxRelay] = outbox.OutboxRelay,
) -> AsyncIterator[tuple[outbox.OutboxRelay, Pool]]:
    """What one API replica holds for its outbox: a pool, a producer, a relay."""
    pool: Pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=3, server_settings={"search_path": schema}
    )
    producer = Producer(kafka_settings, client_id=f"relay-{uuid.uuid4().hex[:6]}")
    await producer.start()
    # Small batches: many claim rounds, so two relays have many chances to interleave.
    relay = relay_class(pool, producer, batch_size=5, poll_interval_s=0.1)
    try:
        yield relay, pool
    finally:
        await relay.stop()
        await producer.stop()
        pool.terminate()


async def _write_in_order(
    pool: Pool, topic: str, keys: Sequence[str], per_key: int
) -> dict[str, list[str]]:
    """Every key's events written at once, each key's one transaction after
    the other (so their order is defined); returns each key's event ids in
    that order."""
    written: dict[str, list[str]] = {key: [] for key in keys}

    async def write(key: str) -> None:
        for n in range(per_key):
            async with pool.acquire() as conn, conn.transaction():
                event_id = await outbox.enqueue(conn, _event(key, topic, name=f"event {n}"))
            written[key].append(event_id)

    await asyncio.gather(*(write(key) for key in keys))
    return written


def _first_seen_per_key(records: list[ConsumerRecord[bytes, bytes]]) -> dict[str, list[str]]:
    """What a consumer that drops repeats by event id (an inbox) applies, per key."""
    seen: set[str] = set()
    per_key: dict[str, list[str]] = {}
    for record in records:
        event_id = from_structured(record.value or b"").id
        if event_id not in seen:
            seen.add(event_id)
            per_key.setdefault((record.key or b"").decode(), []).append(event_id)
    return per_key


async def test_two_relays_racing_publish_each_keys_events_in_write_order(
    pool: Pool,
    database_url: str,
    schema: str,
    kafka_settings: KafkaSettings,
    new_topic,
    kafka_bootstrap: str,
) -> None:
    topic = await new_topic("outbox", partitions=4)
    keys = [f"agreement-{i}" for i in range(8)]
    per_key = 30
    async with (
        _replica(database_url, schema, kafka_settings) as (first, _),
        _replica(database_url, schema, kafka_settings) as (second, _),
    ):
        first.start()
        second.start()
        written = await _write_in_order(pool, topic, keys, per_key)
        records = await read_topic(kafka_bootstrap, topic, expect=len(keys) * per_key, timeout_s=60)
        assert await first.backlog() == 0

    assert _first_seen_per_key(records) == written
    # No relay died: nothing was sent twice.
    assert len(records) == len(keys) * per_key


class _DiesMidway(outbox.OutboxRelay):
    """A relay whose process dies after sending its third batch, before marking it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = 0
        self.dead = asyncio.Event()

    async def _after_publish(self) -> None:
        self.batches += 1
        if self.batches == 3:
            self.dead.set()
            await asyncio.Event().wait()  # a dead process never marks


async def test_a_relay_that_dies_midway_is_taken_over_in_order(
    pool: Pool,
    database_url: str,
    schema: str,
    kafka_settings: KafkaSettings,
    new_topic,
    kafka_bootstrap: str,
) -> None:
    topic = await new_topic("outbox", partitions=4)
    keys = [f"agreement-{i}" for i in range(5)]
    per_key = 20
    total = len(keys) * per_key
    written = await _write_in_order(pool, topic, keys, per_key)
    async with (
        _replica(database_url, schema, kafka_settings, _DiesMidway) as (doomed, doomed_pool),
        _replica(database_url, schema, kafka_settings) as (survivor, _),
    ):
        assert isinstance(doomed, _DiesMidway)
        doomed.start()
        await eventually(lambda: doomed.leading)
        survivor.start()
        await asyncio.wait_for(doomed.dead.wait(), 30)
        # One relay publishes at a time: the other stood by.
        assert survivor.published == 0
        # The process dies: its connections close, and its leadership with them.
        doomed_pool.terminate()
        await doomed.stop()

        records = await read_topic(kafka_bootstrap, topic, expect=total + 5, timeout_s=60)
        await eventually(_drained(survivor), timeout_s=30)

    assert _first_seen_per_key(records) == written
    # The batch sent but not marked went out twice, nothing else did.
    assert len(records) == total + 5
    assert survivor.published == total - 2 * 5


def _drained(relay: outbox.OutboxRelay) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await relay.backlog() == 0

    return check


async def _waits_on_a_lock(pool: Pool, pid: int) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
    )


async def test_a_keys_events_are_published_in_commit_order(
    pool: Pool, producer: Producer, new_topic, kafka_bootstrap: str
) -> None:
    """The transaction that wrote first commits last: its event must not be
    published before the one that committed first."""
    topic = await new_topic("outbox")
    # Each transaction takes the next number just before it commits, holding
    # the row until then: the numbers are the commit order, as the server saw it.
    await pool.execute(
        "CREATE TABLE commit_order (n INT NOT NULL); INSERT INTO commit_order VALUES (0)"
    )
    take_number = "UPDATE commit_order SET n = n + 1 RETURNING n"
    committed: dict[int, str] = {}
    async with pool.acquire() as first, pool.acquire() as second:
        first_tx = first.transaction()
        await first_tx.start()
        grant = await outbox.enqueue(first, _event("agreement-1", topic, name="grant"))

        async def revoke() -> None:
            async with second.transaction():
                event_id = await outbox.enqueue(second, _event("agreement-1", topic, "revoke"))
                committed[await second.fetchval(take_number)] = event_id

        second_writer = asyncio.create_task(revoke())
        # The revocation either commits at once or waits for the grant's
        # transaction to end; either way the grant commits now.
        await eventually(
            lambda: second_writer.done() or _waits_on_a_lock(pool, second.get_server_pid())
        )
        committed[await first.fetchval(take_number)] = grant
        await first_tx.commit()
        await second_writer

    relay = outbox.OutboxRelay(pool, producer)
    while await relay.publish_pending():
        pass
    records = await read_topic(kafka_bootstrap, topic, expect=2)
    in_commit_order = [committed[n] for n in sorted(committed)]
    assert [from_structured(r.value or b"").id for r in records] == in_commit_order


async def test_calls_waiting_for_their_events_learn_when_the_relay_published_them(
    pool: Pool, producer: Producer, new_topic
) -> None:
    topic = await new_topic("outbox-wait")
    event_ids = []
    for n in range(40):
        async with pool.acquire() as conn, conn.transaction():
            event_ids.append(await outbox.enqueue(conn, _event(f"org-{n}", topic)))
    # Many calls wait at once (more than the pool has connections)...
    waiting = [
        asyncio.create_task(outbox.published_within(pool, event_id, timeout_s=30))
        for event_id in event_ids
    ]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)
    # ...and all hear of the relay's publication, not only the first ones.
    relay = outbox.OutboxRelay(pool, producer)
    assert await relay.publish_pending() == 40
    assert await asyncio.wait_for(asyncio.gather(*waiting), timeout=10) == [True] * 40
    # An event never published: False once the time is up.
    assert not await outbox.published_within(pool, "no-such-event", timeout_s=0.2)
