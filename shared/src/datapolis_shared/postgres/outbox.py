"""Transactional outbox and its relay.

``enqueue`` writes the event in the caller's transaction, so the change and its
announcement commit or roll back together. The relay publishes committed rows
in order and marks them; if it dies between publishing and marking, the row is
published again on the next run (at least once) and consumers drop the repeat
by event id (see ``inbox``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from datapolis_shared.events.base import Event
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.kafka import OutgoingRecord, Producer
from datapolis_shared.postgres.pool import Connection, Pool, PooledConnection

log = logging.getLogger(__name__)

INSERT_OUTBOX = """
INSERT INTO outbox (event_id, topic, key, value, headers) VALUES ($1, $2, $3, $4, $5::jsonb)
"""
CLAIM_UNPUBLISHED = """
SELECT seq, topic, key, value, headers FROM outbox
WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED
"""
MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[])"
COUNT_BACKLOG = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
NOTIFY_CHANNEL = "datapolis_outbox"


async def enqueue(conn: Connection, event: Event, *, id: str | None = None) -> str:
    """Write ``event`` to the outbox in the connection's current transaction."""
    envelope = event.to_cloudevent(id=id)
    value, headers = to_structured(envelope)
    await conn.execute(
        INSERT_OUTBOX,
        envelope.id,
        event.topic,
        event.key().encode(),
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
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_cycle = time.monotonic()
        self.published = 0

    async def publish_pending(self) -> int:
        """Publish one batch of committed, unpublished rows; returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_UNPUBLISHED, self._batch_size)
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
            self._after_publish()
            await conn.execute(MARK_PUBLISHED, [r["seq"] for r in rows])
        self.published += len(rows)
        return len(rows)

    def _after_publish(self) -> None:
        """Between publish and mark: a seam for tests that kill the relay here."""

    async def backlog(self) -> int:
        return int(await self._pool.fetchval(COUNT_BACKLOG))

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

    async def _release(self, listener: PooledConnection) -> None:
        with contextlib.suppress(Exception):
            await listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            await self._pool.release(listener)

    async def _run(self) -> None:
        listener: PooledConnection | None = None
        backoff = 0.5
        while True:
            try:
                if listener is None or listener.is_closed():
                    listener = await self._pool.acquire()
                    await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
                while await self.publish_pending():
                    pass
                self._last_cycle = time.monotonic()
                backoff = 0.5
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            except asyncio.CancelledError:
                if listener is not None:
                    await self._release(listener)
                raise
            except Exception as exc:
                # Kafka or PostgreSQL is down: nothing is lost, rows stay
                # unpublished; retry quietly with backoff.
                log.warning("outbox relay: %r; retrying in %.1fs", exc, backoff)
                self._last_cycle = time.monotonic()
                if listener is not None:
                    await self._release(listener)
                    listener = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
