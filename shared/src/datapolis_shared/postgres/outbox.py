"""Transactional outbox and its relay.

``enqueue`` writes the event in the caller's transaction, so the change and its
announcement commit or roll back together. The relay publishes committed rows
and marks them; if it dies between publishing and marking, the row is
published again by the next relay (at least once) and consumers drop the
repeat by event id (see ``inbox``).

Per-key order. A consumer must see one key's events (an agreement's grant,
then its revocation) in the order their transactions committed, however many
replicas run a relay. Two rules give that:

1. One relay publishes per schema. Every relay tries for a session-level
   advisory lock named after the schema; the one that gets it publishes, the
   others stand by and try again every ``poll_interval_s``. When the leader's
   session ends (the process died, its connection broke, it stopped), the
   lock goes with it and a standby takes over. The leader publishes a batch,
   waits for Kafka's acks, marks it, then reads the next: the order of
   ``seq`` is the order on Kafka.

2. For one key, ``seq`` order is commit order. ``seq`` is drawn when the row
   is inserted, not when its transaction commits, so two transactions writing
   the same key could commit in the opposite order of their ``seq``s, and a
   relay reading in ``seq`` order would publish them backwards (or skip the
   earlier one while it is still in flight and publish it after the later
   one). ``enqueue`` therefore takes a transaction-scoped advisory lock on
   (schema, topic, key) before drawing ``seq``: a second transaction writing
   the same key waits until the first one commits or rolls back, so it draws
   a larger ``seq`` and commits later. Keys are hashed to 32 bits: two keys
   that collide only wait for each other. A transaction that enqueues several
   keys in an order opposite to another one's may deadlock; PostgreSQL then
   aborts one of them (retryable), never both.

Rows of different keys may become visible out of ``seq`` order; the relay
publishes what is visible and picks up a late commit on a later read (it
reads every unpublished row, not from a high-water mark), which is fine since
order is only promised per key.

After a takeover, a batch the old leader had sent but not marked is sent
again; a consumer that drops repeats by event id still sees each key's events
in commit order, since both relays send in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from datapolis_shared.events.base import Event
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.kafka import OutgoingRecord, Producer
from datapolis_shared.postgres.pool import Connection, Pool, PooledConnection
from datapolis_shared.retry import Backoff, keep_running

if TYPE_CHECKING:
    from datapolis_shared.metrics import ServiceMetrics

log = logging.getLogger(__name__)

# The two-int advisory lock space does not overlap the one-bigint space used
# for leadership and migrations; this class id keeps the per-key locks apart
# from any other two-int lock.
KEY_LOCK_CLASS = 7_331_002
LOCK_KEY = f"""
SELECT pg_advisory_xact_lock({KEY_LOCK_CLASS},
    hashtext(current_schema() || '/' || $1 || '/' || coalesce(encode($2::bytea, 'hex'), '')))
"""
INSERT_OUTBOX = """
INSERT INTO outbox (event_id, topic, key, value, headers) VALUES ($1, $2, $3, $4, $5::jsonb)
"""
# Advisory locks are database-wide: the lock is named after the schema so
# each service (and each test schema) has a leader of its own.
LEADER_LOCK_ID = "hashtextextended('datapolis.outbox.relay/' || current_schema(), 0)"
TRY_LEAD = f"SELECT pg_try_advisory_lock({LEADER_LOCK_ID})"
# A leader that vanishes without closing its connection (its node lost, the
# network cut) keeps the lock until the server sees the session dead: with
# these, within about 25 s instead of the system's default of hours. They are
# reset when the connection goes back to the pool.
LEADER_SESSION = """
SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3
"""
RESIGN = f"SELECT pg_advisory_unlock({LEADER_LOCK_ID})"
SELECT_UNPUBLISHED = """
SELECT seq, topic, key, value, headers FROM outbox
WHERE published_at IS NULL ORDER BY seq LIMIT $1
"""
MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[])"
COUNT_BACKLOG = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
BACKLOG_STATE = """
SELECT count(*) AS rows,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
FROM outbox WHERE published_at IS NULL
"""
NOTIFY_CHANNEL = "datapolis_outbox"
REPORT_INTERVAL_S = 5.0


PUBLISHED_AMONG = """
SELECT event_id FROM outbox WHERE event_id = ANY($1::text[]) AND published_at IS NOT NULL
"""
# How often the calls waiting for their events look: one query for all of
# them, so the wait adds at most this to an answer, and many waiting calls
# cost no more connections than one.
PUBLISHED_POLL_S = 0.002


class _PublicationWatch:
    """Every call of one pool waiting for its event, answered by one poll."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.task: asyncio.Task[None] | None = None

    def wait(self, event_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(event_id, []).append(future)
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = asyncio.create_task(self._poll(), name="outbox-published-watch")
        return future

    async def _poll(self) -> None:
        try:
            while self.waiting:
                try:
                    published = await self.pool.fetch(PUBLISHED_AMONG, list(self.waiting))
                except Exception:  # PostgreSQL away: the callers time out
                    log.debug("checking published events failed", exc_info=True)
                    published = []
                for row in published:
                    for future in self.waiting.pop(row["event_id"], []):
                        if not future.done():
                            future.set_result(None)
                # Callers that gave up (timed out, cancelled) wait no more.
                for event_id, futures in list(self.waiting.items()):
                    alive = [future for future in futures if not future.done()]
                    if alive:
                        self.waiting[event_id] = alive
                    else:
                        del self.waiting[event_id]
                if self.waiting:
                    await asyncio.sleep(PUBLISHED_POLL_S)
        finally:
            if _WATCHES.get(id(self.pool)) is self:
                del _WATCHES[id(self.pool)]


_WATCHES: dict[int, _PublicationWatch] = {}


async def published_within(pool: Pool, event_id: str, *, timeout_s: float) -> bool:
    """Whether the relay has had Kafka acknowledge the event ``event_id``
    within ``timeout_s``: for a call that must answer only once its change
    is on Kafka. It waits for the relay (woken by the commit's NOTIFY)
    rather than publishing itself, which would race the relay and could put
    one key's events out of order. The calls waiting on one pool share one
    poll every ``PUBLISHED_POLL_S``."""
    watch = _WATCHES.get(id(pool))
    if watch is None or watch.pool is not pool:
        watch = _WATCHES[id(pool)] = _PublicationWatch(pool)
    try:
        await asyncio.wait_for(watch.wait(event_id), timeout=timeout_s)
    except TimeoutError:
        return False
    return True


async def enqueue(conn: Connection, event: Event, *, id: str | None = None) -> str:
    """Write ``event`` to the outbox in the connection's current transaction.

    Waits while another open transaction has an event for the same topic and
    key in the outbox (see the module's notes on per-key order)."""
    envelope = event.to_cloudevent(id=id)
    value, headers = to_structured(envelope)
    key = event.key().encode()
    await conn.execute(LOCK_KEY, event.topic, key)
    await conn.execute(
        INSERT_OUTBOX,
        envelope.id,
        event.topic,
        key,
        value,
        json.dumps([[k, v.decode()] for k, v in headers]),
    )
    # Wakes the relay at commit time (NOTIFY is transactional).
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return envelope.id


class OutboxRelay:
    def __init__(
        self,
        pool: Pool,
        producer: Producer,
        *,
        batch_size: int = 200,
        poll_interval_s: float = 1.0,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_cycle = time.monotonic()
        self._reported_at = float("-inf")
        self.leading = False
        self.published = 0

    async def publish_pending(self) -> int:
        """Publish one batch if no other relay of this schema leads; returns how
        many rows were published."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval(TRY_LEAD):
                return 0
            try:
                return await self._publish_batch(conn)
            finally:
                await conn.execute(RESIGN)

    async def _publish_batch(self, conn: Connection) -> int:
        """Publish the oldest unpublished rows and mark them, on the leader's
        connection. Marked only once Kafka acknowledged every one of them."""
        rows = await conn.fetch(SELECT_UNPUBLISHED, self._batch_size)
        if not rows:
            return 0
        await self._producer.send_many(
            [
                OutgoingRecord(
                    r["topic"],
                    r["value"],
                    r["key"],
                    [(k, v.encode()) for k, v in json.loads(r["headers"])],
                )
                for r in rows
            ]
        )
        await self._after_publish()
        await conn.execute(MARK_PUBLISHED, [r["seq"] for r in rows])
        self.published += len(rows)
        return len(rows)

    async def _after_publish(self) -> None:
        """Between publish and mark: a seam for tests that kill the relay here."""

    async def backlog(self) -> int:
        return int(await self._pool.fetchval(COUNT_BACKLOG))

    async def _report_backlog(self, conn: Connection) -> None:
        # Every replica counts: at most every few seconds, since a backlog
        # left by a long Kafka outage can be large.
        if self._metrics is None or time.monotonic() - self._reported_at < REPORT_INTERVAL_S:
            return
        self._reported_at = time.monotonic()
        state = await conn.fetchrow(BACKLOG_STATE)
        assert state is not None
        self._metrics.outbox_backlog.set(state["rows"])
        self._metrics.outbox_oldest_age.set(state["oldest_age_s"])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def problem(self) -> str | None:
        if self._task is None or self._task.done():
            return "outbox relay not running"
        idle = time.monotonic() - self._last_cycle
        if idle > 60:
            return f"outbox relay made no progress for {idle:.0f}s"
        return None

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        # Kafka or PostgreSQL down: nothing is lost, rows stay unpublished and
        # the cycle is retried with backoff. Leadership was given up with the
        # connection (released or closed).
        await keep_running(self._cycle, doing="outbox relay", backoff=Backoff(0.5, 10.0))

    async def _cycle(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                if await conn.fetchval(TRY_LEAD):
                    await self._lead(conn)
                else:
                    # Standing by: still report the backlog, so an alert
                    # fires even when the leader cannot.
                    await self._report_backlog(conn)
        finally:
            self._last_cycle = time.monotonic()
        await asyncio.sleep(self._poll_interval_s)

    async def _lead(self, conn: PooledConnection) -> None:
        """Publish until cancelled or until the connection fails. Whatever
        way this ends, the lock is released: explicitly here, or by the
        pool's reset of the connection, or with the session when it dies."""
        self.leading = True
        try:
            await conn.execute(LEADER_SESSION)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                while True:
                    self._wake.clear()
                    await self._report_backlog(conn)
                    while await self._publish_batch(conn):
                        pass
                    await self._report_backlog(conn)
                    self._last_cycle = time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                    await conn.execute(RESIGN)
        finally:
            self.leading = False
