"""Verification of the ledger: the whole chain, or one entity's rows.

It reads the rows in sequence order through a server-side cursor (never the
whole ledger in memory), in one REPEATABLE READ snapshot, and for each row
checks, in this order:

1. its sequence follows the previous one (else rows are **missing**);
2. its ``prev_hash`` is the previous row's hash (else the rows were
   **reordered**, when it names a row further on, or the chain is
   **unlinked**: a row before it was deleted or rewritten since);
3. its hash is the hash of its content (else the row was **altered**);
4. at a checkpoint's sequence, its hash is the signed one (else history was
   rewritten since the checkpoint: **checkpoint_mismatch**).

After the last row, the head must be that row (rows deleted from the end are
**missing**), and no checkpoint may lie beyond it. The first break is
reported, with its sequence and why. A forger who recomputes every hash after
the row they change passes 1 to 3, and fails 4 at the first checkpoint made
after that row: checkpoints are what make a rewrite detectable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from datapolis_consent.ledger.chain import (
    GENESIS_HASH,
    EntityKind,
    InvalidChange,
    LedgerError,
    canonical_stored_payload,
    entry_hash,
)
from datapolis_consent.ledger.checkpoints import (
    Checkpoint,
    InvalidCheckpoint,
    Signer,
    open_checkpoint,
    stored_checkpoint_tokens,
)
from datapolis_consent.ledger.store import Head, head
from datapolis_shared.postgres.pool import Connection

ROWS = """
SELECT sequence, entity_kind, entity_id, change, payload::text, actor, recorded_at,
       prev_hash, hash
FROM ledger WHERE sequence >= $1 AND sequence <= $2 ORDER BY sequence
"""
HASH_AT = "SELECT hash FROM ledger WHERE sequence = $1"
CHANGE_AT = "SELECT change FROM ledger WHERE sequence = $1"
# The change that opens each kind of entity's history: the first row about an
# agreement or a consent is always this one.
OPENING = {"agreement": "requested", "consent": "granted"}
SEQUENCE_OF_HASH = "SELECT sequence FROM ledger WHERE hash = $1"
ENTITY_SPAN = """
SELECT min(sequence) AS first, max(sequence) AS last, count(*) AS rows
FROM ledger WHERE entity_kind = $1 AND entity_id = $2
"""
GUARD_STATE = """
SELECT tgenabled::text FROM pg_trigger
WHERE tgrelid = 'ledger'::regclass AND tgname = 'ledger_append_only'
"""
# Rows fetched per round trip of the cursor.
BATCH = 2000
_NO_END = 2**63 - 1

BreakKind = Literal[
    "missing",
    "reordered",
    "unlinked",
    "altered",
    "head_mismatch",
    "checkpoint_mismatch",
    "checkpoint_invalid",
]


class EntityNotInLedger(LedgerError):
    """No row of the ledger is about this agreement or consent."""


@dataclass(frozen=True)
class ChainBreak:
    """The first place the ledger is not what was recorded. ``sequence`` is
    None for a checkpoint token that does not verify."""

    sequence: int | None
    kind: BreakKind
    detail: str


@dataclass(frozen=True)
class Verification:
    first_sequence: int
    last_sequence: int
    rows: int
    checkpoints_matched: int
    # The latest checkpoint the rows were matched against (None: none yet).
    anchored_at: int | None
    head: Head
    # False when the trigger that refuses UPDATE, DELETE and TRUNCATE is off.
    append_only_enforced: bool
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "ok": self.ok,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "rows": self.rows,
            "checkpoints_matched": self.checkpoints_matched,
            "anchored_at": self.anchored_at,
            "head": {"sequence": self.head.sequence, "hash": self.head.hash},
            "append_only_enforced": self.append_only_enforced,
            "broken": None if self.broken is None else dataclasses.asdict(self.broken),
        }


@dataclass
class _Walk:
    rows: int = 0
    last_sequence: int = 0
    last_hash: str = GENESIS_HASH
    matched: int = 0
    anchored_at: int | None = None
    broken: ChainBreak | None = None


async def verify_chain(
    conn: Connection, *, signer: Signer | None = None, tokens: Iterable[str] = ()
) -> Verification:
    """Checks the whole chain, and, given a signer, against every stored
    checkpoint and the ``tokens`` a party brings (checkpoints published
    earlier). ``conn`` must not be in a transaction."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        current = await head(conn)
        checkpoints, invalid = await _checkpoints(conn, signer, tokens)
        enforced = await _enforced(conn)
        if invalid is not None:
            return _result(1, _Walk(broken=invalid), current, enforced)
        walk = await _walk(conn, 1, _NO_END, GENESIS_HASH, checkpoints)
        if walk.broken is None:
            walk.broken = _check_end(walk, current, checkpoints)
        return _result(1, walk, current, enforced)


async def verify_entity(
    conn: Connection,
    entity_kind: EntityKind,
    entity_id: str,
    *,
    signer: Signer | None = None,
    tokens: Iterable[str] = (),
) -> Verification:
    """Checks one agreement's or consent's rows and the links they sit on:
    its first row opens its history (a request, a consent's grant), and the
    chain holds from that row to the row after its last one, and on to the
    first checkpoint at or after its last row, which proves they are part of
    the signed history. Raises :class:`EntityNotInLedger`."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        span = await conn.fetchrow(ENTITY_SPAN, entity_kind, entity_id)
        if span is None or span["rows"] == 0:
            raise EntityNotInLedger(f"no ledger row is about {entity_kind} {entity_id}")
        first, last = span["first"], span["last"]
        current = await head(conn)
        checkpoints, invalid = await _checkpoints(conn, signer, tokens)
        enforced = await _enforced(conn)
        if invalid is not None:
            return _result(first, _Walk(broken=invalid), current, enforced)
        opening = await conn.fetchval(CHANGE_AT, first)
        if opening != OPENING[entity_kind]:
            # Its first rows were deleted: the walk below starts from the
            # rows left and could not tell.
            cut = ChainBreak(
                first,
                "missing",
                f"the first row about {entity_kind} {entity_id} is {opening!r}, not "
                f"{OPENING[entity_kind]!r}: its earlier rows were deleted",
            )
            return _result(first, _Walk(last_sequence=first - 1, broken=cut), current, enforced)
        covering = [c.sequence for c in checkpoints if c.sequence >= last]
        end = max(min(last + 1, current.sequence), min(covering, default=0))
        anchor = GENESIS_HASH
        if first > 1:
            anchor = await conn.fetchval(HASH_AT, first - 1)
            if anchor is None:
                missing = ChainBreak(first - 1, "missing", f"row {first - 1} is missing")
                return _result(first, _Walk(broken=missing), current, enforced)
        relevant = [c for c in checkpoints if first <= c.sequence <= end]
        walk = await _walk(conn, first, end, anchor, relevant)
        if walk.broken is None and walk.last_sequence < end:
            walk.broken = ChainBreak(
                walk.last_sequence + 1,
                "missing",
                f"rows {walk.last_sequence + 1} to {end} are missing",
            )
        if walk.broken is None and end == current.sequence and walk.last_hash != current.hash:
            walk.broken = _head_mismatch(walk, current)
        return _result(first, walk, current, enforced)


async def _walk(
    conn: Connection, start: int, end: int, anchor: str, checkpoints: list[Checkpoint]
) -> _Walk:
    expected_at: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        expected_at.setdefault(checkpoint.sequence, []).append(checkpoint)
    walk = _Walk(last_sequence=start - 1, last_hash=anchor)
    suspect: tuple[int, str, bool] | None = None
    async for row in conn.cursor(ROWS, start, end, prefetch=BATCH):
        sequence, kind, entity_id, change, payload, actor, recorded_at, prev_hash, digest = row
        expected = walk.last_sequence + 1
        if sequence != expected:
            gap = f"{expected}" if sequence == expected + 1 else f"{expected} to {sequence - 1}"
            walk.broken = ChainBreak(expected, "missing", f"row(s) {gap} are missing")
            break
        try:
            content_ok = digest == entry_hash(
                sequence=sequence,
                entity_kind=kind,
                entity_id=entity_id,
                change=change,
                payload=canonical_stored_payload(payload),
                actor=actor,
                recorded_at=recorded_at,
                prev_hash=prev_hash,
            )
        except InvalidChange:
            # Content no append could have written (a number beyond a
            # double, say) was put there by hand.
            content_ok = False
        if prev_hash != walk.last_hash:
            # Diagnosed after the cursor is closed: it needs another query.
            suspect = (sequence, prev_hash, content_ok)
            break
        if not content_ok:
            walk.broken = ChainBreak(
                sequence, "altered", f"row {sequence} does not match its hash: it was altered"
            )
            break
        for checkpoint in expected_at.get(sequence, ()):
            if checkpoint.hash != digest:
                walk.broken = ChainBreak(
                    sequence,
                    "checkpoint_mismatch",
                    f"row {sequence} is not the one signed in the checkpoint of "
                    f"{checkpoint.checkpointed_at.isoformat()}: history was rewritten since",
                )
                break
            walk.matched += 1
            walk.anchored_at = sequence
        if walk.broken is not None:
            break
        walk.rows += 1
        walk.last_sequence = sequence
        walk.last_hash = digest
    if suspect is not None:
        walk.broken = await _diagnose_link(conn, *suspect)
    return walk


async def _diagnose_link(
    conn: Connection, sequence: int, prev_hash: str, content_ok: bool
) -> ChainBreak:
    linked_to = await conn.fetchval(SEQUENCE_OF_HASH, prev_hash)
    if linked_to is not None and linked_to >= sequence:
        return ChainBreak(
            sequence,
            "reordered",
            f"row {sequence} was appended after the row now at {linked_to}: rows were reordered",
        )
    if content_ok:
        return ChainBreak(
            sequence,
            "unlinked",
            f"row {sequence - 1} is not the row that row {sequence} was appended after: "
            f"it was rewritten",
        )
    return ChainBreak(
        sequence,
        "unlinked",
        f"row {sequence} neither matches its hash nor follows row {sequence - 1}: "
        f"rows before it were deleted and the rest renumbered, or it was rewritten",
    )


def _check_end(walk: _Walk, current: Head, checkpoints: list[Checkpoint]) -> ChainBreak | None:
    if walk.last_sequence < current.sequence:
        return ChainBreak(
            walk.last_sequence + 1,
            "missing",
            f"the chain ends at {walk.last_sequence} but its head is {current.sequence}: "
            f"rows were deleted from its end",
        )
    if walk.last_sequence > current.sequence or walk.last_hash != current.hash:
        return _head_mismatch(walk, current)
    beyond = [c for c in checkpoints if c.sequence > walk.last_sequence]
    if beyond:
        return ChainBreak(
            walk.last_sequence + 1,
            "missing",
            f"a checkpoint was signed at {beyond[0].sequence} but the chain ends at "
            f"{walk.last_sequence}: rows were deleted",
        )
    return None


def _head_mismatch(walk: _Walk, current: Head) -> ChainBreak:
    return ChainBreak(
        walk.last_sequence,
        "head_mismatch",
        f"the chain ends at row {walk.last_sequence} but the head is row {current.sequence} "
        f"with another hash",
    )


async def _checkpoints(
    conn: Connection, signer: Signer | None, tokens: Iterable[str]
) -> tuple[list[Checkpoint], ChainBreak | None]:
    given = list(tokens)
    if signer is None:
        if given:
            raise ValueError("checking checkpoint tokens needs a signer to verify them")
        return [], None
    checkpoints: list[Checkpoint] = []
    for token in [*await stored_checkpoint_tokens(conn), *given]:
        try:
            checkpoints.append(open_checkpoint(token, signer))
        except InvalidCheckpoint as exc:
            return [], ChainBreak(None, "checkpoint_invalid", str(exc))
    checkpoints.sort(key=lambda c: c.sequence)
    for checkpoint in checkpoints:
        if checkpoint.sequence == 0 and checkpoint.hash != GENESIS_HASH:
            return [], ChainBreak(0, "checkpoint_mismatch", "a checkpoint of the empty chain")
    return checkpoints, None


async def _enforced(conn: Connection) -> bool:
    state = await conn.fetchval(GUARD_STATE)
    return state in ("A", "O")


def _result(first: int, walk: _Walk, current: Head, enforced: bool) -> Verification:
    return Verification(
        first_sequence=first,
        last_sequence=walk.last_sequence,
        rows=walk.rows,
        checkpoints_matched=walk.matched,
        anchored_at=walk.anchored_at,
        head=current,
        append_only_enforced=enforced,
        broken=walk.broken,
    )
