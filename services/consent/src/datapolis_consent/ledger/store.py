"""Appending to the ledger, inside the caller's transaction.

The caller records a change, writes the current-state projection and enqueues
the outbox event in one transaction, so the three commit or roll back
together. Appends run one after the other: each locks the head row until its
transaction ends, so the next one reads the new head and the chain stays
linear, with no gap in its sequences (a rolled-back append gives its sequence
back).

Append before enqueuing the event (the event carries the row's sequence and
hash anyway): the head lock is then always taken before the outbox's per-key
lock, and two transactions cannot wait for each other in opposite orders.

Appends need READ COMMITTED (PostgreSQL's default): under REPEATABLE READ a
transaction that waited for the head would fail with a serialization error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from datapolis_consent.ledger.chain import (
    EntityKind,
    InvalidChange,
    LedgerEntry,
    LedgerError,
    Payload,
    canonical_payload,
    check_change,
    decode_payload,
    entry_hash,
)
from datapolis_shared.postgres.pool import Connection

ENTRY_AT = """
SELECT sequence, entity_kind, entity_id, change, payload::text, actor, recorded_at, prev_hash, hash
FROM ledger WHERE sequence = $1
"""
LOCK_HEAD = "SELECT sequence, hash, recorded_at FROM ledger_head FOR UPDATE"
READ_HEAD = "SELECT sequence, hash, recorded_at FROM ledger_head"
# The payload goes in as text and is cast by PostgreSQL, whatever JSON codec
# the connection may have.
INSERT_ENTRY = """
WITH entry AS (
    INSERT INTO ledger (sequence, entity_kind, entity_id, change, payload, actor,
                        recorded_at, prev_hash, hash)
    VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9)
)
UPDATE ledger_head SET sequence = $1, hash = $9, recorded_at = $7
"""


# An escaped NUL: a \u0000 not itself preceded by an escaped backslash.
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class NotInTransaction(LedgerError):
    """An append outside a transaction would commit the row alone, without
    the projection and the event that go with it."""


@dataclass(frozen=True)
class Head:
    """The chain's last row: its sequence (0 while the ledger is empty) and hash."""

    sequence: int
    hash: str


async def head(conn: Connection) -> Head:
    row = await conn.fetchrow(READ_HEAD)
    assert row is not None, "the ledger migration inserts the head row"
    return Head(row["sequence"], row["hash"])


async def append(
    conn: Connection,
    *,
    entity_kind: EntityKind,
    entity_id: str,
    change: str,
    payload: Payload,
    actor: str,
) -> LedgerEntry:
    """Records one change in the caller's open transaction and returns the row,
    with the sequence and hash its event carries."""
    if not conn.is_in_transaction():
        raise NotInTransaction("append to the ledger inside the transaction of the change")
    check_change(entity_kind, change)
    if not entity_id or not actor:
        raise InvalidChange("a ledger row names its entity and its actor")
    # Canonicalise before taking the lock: a payload that cannot be hashed is
    # refused without making other appends wait.
    body = canonical_payload(payload)
    payload_text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    if _NUL.search(payload_text):
        raise InvalidChange("a ledger payload cannot hold the NUL character (JSONB refuses it)")

    locked = await conn.fetchrow(LOCK_HEAD)
    assert locked is not None, "the ledger migration inserts the head row"
    sequence = locked["sequence"] + 1
    prev_hash = locked["hash"]
    # Times never go backwards along the chain, even if this process's clock
    # is behind the one of the process that appended last.
    recorded_at = datetime.now(UTC)
    if locked["recorded_at"] is not None:
        recorded_at = max(recorded_at, locked["recorded_at"])
    digest = entry_hash(
        sequence=sequence,
        entity_kind=entity_kind,
        entity_id=entity_id,
        change=change,
        payload=body,
        actor=actor,
        recorded_at=recorded_at,
        prev_hash=prev_hash,
    )
    await conn.execute(
        INSERT_ENTRY,
        sequence,
        entity_kind,
        entity_id,
        change,
        payload_text,
        actor,
        recorded_at,
        prev_hash,
        digest,
    )
    return LedgerEntry(
        sequence=sequence,
        entity_kind=entity_kind,
        entity_id=entity_id,
        change=change,
        payload=payload,
        actor=actor,
        recorded_at=recorded_at,
        prev_hash=prev_hash,
        hash=digest,
    )


async def entry_at(conn: Connection, sequence: int) -> LedgerEntry | None:
    """The row at ``sequence``, as recorded (None if there is none)."""
    row = await conn.fetchrow(ENTRY_AT, sequence)
    if row is None:
        return None
    return LedgerEntry(
        sequence=row["sequence"],
        entity_kind=row["entity_kind"],
        entity_id=row["entity_id"],
        change=row["change"],
        payload=decode_payload(row["payload"]),
        actor=row["actor"],
        recorded_at=row["recorded_at"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
