"""Inbox of processed event ids, for idempotent consumers."""

from __future__ import annotations

from datapolis_shared.postgres.pool import Connection

RECORD_PROCESSED = """
INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1
"""


async def first_time(conn: Connection, consumer: str, event_id: str) -> bool:
    """Record ``event_id`` as processed by ``consumer`` in the current
    transaction; False when it was already processed (skip the effect)."""
    return await conn.fetchval(RECORD_PROCESSED, consumer, event_id) is not None
