"""Publishing checkpoints: sign the head when it moved, and read them back.

Several replicas of the consent worker may tick at once. Each tries a
transaction-scoped advisory lock named after the schema first; the one that
holds it compares the head with the latest stored checkpoint and signs only if
the head moved. The others skip that tick, and the next one reads the
committed checkpoint (READ COMMITTED takes a new snapshot per statement), so
one head is checkpointed once whichever replicas run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from asyncpg import Record

from datapolis_consent.ledger.checkpoints import Checkpoint, Signer, create_checkpoint
from datapolis_consent.ledger.store import head
from datapolis_shared.postgres.pool import Connection, Pool

# The lock is per schema: two consent deployments sharing a database (tests
# do) must not hold each other back.
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.ledger_checkpoints'))"
LAST_SEQUENCE = "SELECT max(sequence) FROM ledger_checkpoints"
LATEST = """
SELECT checkpoint_id, sequence, hash, checkpointed_at, token FROM ledger_checkpoints
ORDER BY checkpoint_id DESC LIMIT 1
"""
PAGE = """
SELECT checkpoint_id, sequence, hash, checkpointed_at, token FROM ledger_checkpoints
WHERE checkpoint_id > $1 ORDER BY checkpoint_id LIMIT $2
"""


async def checkpoint_if_moved(conn: Connection, signer: Signer) -> Checkpoint | None:
    """Signs and stores a checkpoint of the head if no checkpoint covers it
    yet; None when the head has not moved (or is still empty), or when
    another replica is checkpointing right now."""
    async with conn.transaction():
        if not await conn.fetchval(TRY_LOCK):
            return None
        current = await head(conn)
        last = await conn.fetchval(LAST_SEQUENCE)
        if current.sequence == 0 or (last is not None and last >= current.sequence):
            return None
        return await create_checkpoint(conn, signer)


@dataclass(frozen=True)
class StoredCheckpoint:
    """A published checkpoint; ``id`` orders them in the order they were made."""

    id: int
    sequence: int
    hash: str
    checkpointed_at: datetime
    token: str


def _stored(row: Record) -> StoredCheckpoint:
    return StoredCheckpoint(
        id=row["checkpoint_id"],
        sequence=row["sequence"],
        hash=row["hash"],
        checkpointed_at=row["checkpointed_at"],
        token=row["token"],
    )


async def latest_checkpoint(conn: Connection | Pool) -> StoredCheckpoint | None:
    row = await conn.fetchrow(LATEST)
    return None if row is None else _stored(row)


async def list_checkpoints(
    conn: Connection | Pool, *, after_id: int = 0, limit: int = 100
) -> list[StoredCheckpoint]:
    """Checkpoints in the order they were made, from the one after ``after_id``."""
    return [_stored(row) for row in await conn.fetch(PAGE, after_id, limit)]
