"""The consent ledger against the real PostgreSQL: appends make one linear
hash chain, PostgreSQL refuses edits, and any edit made anyway (by the
tables' owner switching the guard off) is found by verification, by the
chain itself or by a signed checkpoint."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import rfc8785
from joserfc.jwk import OKPKey

from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger import (
    GENESIS_HASH,
    EntityNotInLedger,
    Head,
    InvalidChange,
    LedgerEntry,
    NotInTransaction,
    append,
    create_checkpoint,
    entry_hash,
    head,
    verify_chain,
    verify_entity,
)
from datapolis_consent.ledger.chain import canonical_stored_payload, decode_payload
from datapolis_consent.ledger.jws import KeyRingSigner
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.postgres.pool import Connection, Pool
from tests.hmac_signer import HmacSigner
from tests.json_samples import random_object

SIGNER = HmacSigner()


@pytest.fixture
async def ledger(database_url: str, schema: str, pool: Pool) -> Pool:
    await apply(database_url, schema, service_migrations("datapolis_consent"))
    return pool


@pytest.fixture
async def owner(database_url: str, schema: str, ledger: Pool) -> AsyncIterator[Connection]:
    """A session of the tables' owner, which may switch the append-only guard
    off, as a superuser may."""
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    yield conn
    await conn.close()


async def record(
    pool: Pool, entity_id: str, change: str = "requested", **payload: Any
) -> LedgerEntry:
    async with pool.acquire() as conn, conn.transaction():
        return await append(
            conn,
            entity_kind="agreement",
            entity_id=entity_id,
            change=change,
            payload={"dataset": "ds-meters", **payload},
            actor="org:consumer",
        )


async def fill(pool: Pool, rows: int) -> list[LedgerEntry]:
    return [await record(pool, f"agr-{i % 3}", n=i, ratio=i / 7) for i in range(rows)]


async def unguarded(owner: Connection, statement: str, *args: Any) -> None:
    async with owner.transaction():
        await owner.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        await owner.execute(statement, *args)
        await owner.execute("ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_append_only")


async def rehash_from(owner: Connection, sequence: int) -> None:
    """What a forger who can recompute hashes does after editing a row: make
    the chain consistent again from that row on, head included."""
    async with owner.transaction():
        await owner.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        prev = await owner.fetchval("SELECT hash FROM ledger WHERE sequence = $1", sequence - 1)
        rows = await owner.fetch(
            "SELECT *, payload::text AS body FROM ledger WHERE sequence >= $1 ORDER BY sequence",
            sequence,
        )
        for row in rows:
            digest = entry_hash(
                sequence=row["sequence"],
                entity_kind=row["entity_kind"],
                entity_id=row["entity_id"],
                change=row["change"],
                payload=decode_payload(row["body"]),
                actor=row["actor"],
                recorded_at=row["recorded_at"],
                prev_hash=prev or GENESIS_HASH,
            )
            await owner.execute(
                "UPDATE ledger SET prev_hash = $2, hash = $3 WHERE sequence = $1",
                row["sequence"],
                prev or GENESIS_HASH,
                digest,
            )
            prev = digest
        last = await owner.fetchval("SELECT max(sequence) FROM ledger")
        await owner.execute("UPDATE ledger_head SET sequence = $1, hash = $2", last, prev)
        await owner.execute("ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_append_only")


async def test_appends_make_a_chain_that_verifies(ledger: Pool) -> None:
    entries = await fill(ledger, 12)
    assert [e.sequence for e in entries] == list(range(1, 13))
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert all(e.recorded_at <= f.recorded_at for e, f in itertools.pairwise(entries))
    async with ledger.acquire() as conn:
        assert await head(conn) == Head(12, entries[-1].hash)
        result = await verify_chain(conn)
    assert result.ok, result.broken
    assert (result.rows, result.last_sequence, result.append_only_enforced) == (12, 12, True)


async def test_an_empty_ledger_verifies(ledger: Pool) -> None:
    async with ledger.acquire() as conn:
        result = await verify_chain(conn, signer=SIGNER)
    assert result.ok
    assert result.rows == 0


async def test_a_rolled_back_append_leaves_no_row_and_no_gap(ledger: Pool) -> None:
    first = await record(ledger, "agr-1")
    async with ledger.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await append(
                    conn,
                    entity_kind="agreement",
                    entity_id="agr-1",
                    change="granted",
                    payload={},
                    actor="org:publisher",
                )
                raise RuntimeError("the projection could not be written")
    second = await record(ledger, "agr-1", "granted")
    assert (second.sequence, second.prev_hash) == (2, first.hash)
    async with ledger.acquire() as conn:
        assert (await verify_chain(conn)).ok


async def test_an_append_outside_a_transaction_or_with_a_bad_change_is_refused(
    ledger: Pool,
) -> None:
    async with ledger.acquire() as conn:
        with pytest.raises(NotInTransaction):
            await append(
                conn, entity_kind="consent", entity_id="c", change="granted", payload={}, actor="s"
            )
        async with conn.transaction():
            with pytest.raises(InvalidChange):
                await append(
                    conn,
                    entity_kind="consent",
                    entity_id="c",
                    change="amended",
                    payload={},
                    actor="s",
                )
            with pytest.raises(InvalidChange):
                await append(
                    conn,
                    entity_kind="consent",
                    entity_id="c",
                    change="granted",
                    payload={"n": float("nan")},
                    actor="s",
                )
            with pytest.raises(InvalidChange, match="NUL"):
                await append(
                    conn,
                    entity_kind="consent",
                    entity_id="c",
                    change="granted",
                    payload={"note": "a\x00b"},
                    actor="s",
                )
            # An escaped backslash before "u0000" is no NUL.
            await append(
                conn,
                entity_kind="consent",
                entity_id="c",
                change="granted",
                payload={"path": "C:\\u0000"},
                actor="s",
            )
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 1


async def test_concurrent_appends_stay_one_linear_chain(
    ledger: Pool, database_url: str, schema: str
) -> None:
    writers, each = 6, 15
    conns = [
        await asyncpg.connect(database_url, server_settings={"search_path": schema})
        for _ in range(writers)
    ]

    async def write(conn: Connection, writer: int) -> list[int]:
        sequences = []
        for i in range(each):
            async with conn.transaction():
                entry = await append(
                    conn,
                    entity_kind="consent",
                    entity_id=f"consent-{writer}",
                    change="granted" if i % 2 == 0 else "withdrawn",
                    payload={"writer": writer, "i": i},
                    actor=f"subject:{writer}",
                )
                # Hold the transaction open a little, as a caller writing its
                # projection and event does, so appends really overlap.
                await conn.execute("SELECT pg_sleep(0.002)")
            sequences.append(entry.sequence)
        return sequences

    try:
        per_writer = await asyncio.gather(*(write(c, w) for w, c in enumerate(conns)))
    finally:
        for writer_conn in conns:
            await writer_conn.close()
    assert sorted(s for seqs in per_writer for s in seqs) == list(range(1, writers * each + 1))
    async with ledger.acquire() as conn:
        result = await verify_chain(conn)
        forks = await conn.fetchval("SELECT count(*) - count(DISTINCT prev_hash) FROM ledger")
    assert result.ok, result.broken
    assert result.rows == writers * each
    assert forks == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger SET actor = 'org:someone-else' WHERE sequence = 2",
        "DELETE FROM ledger WHERE sequence = 2",
        "TRUNCATE ledger",
        "UPDATE ledger_checkpoints SET sequence = 0",
        "DELETE FROM ledger_checkpoints",
    ],
)
async def test_postgresql_refuses_to_edit_history(ledger: Pool, statement: str) -> None:
    await fill(ledger, 3)
    async with ledger.acquire() as conn:
        await create_checkpoint(conn, SIGNER)
        with pytest.raises(asyncpg.PostgresError, match="append-only") as refused:
            await conn.execute(statement)
        assert refused.value.sqlstate == "DL001"
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 3
        assert await conn.fetchval("SELECT count(*) FROM ledger_checkpoints") == 1
        assert (await verify_chain(conn, signer=SIGNER)).ok


# Each edit is made by the tables' owner with the guard switched off.
EDITS: dict[str, list[str]] = {
    "altered": [
        'UPDATE ledger SET payload = payload || \'{"dataset": "ds-other"}\' WHERE sequence = 5'
    ],
    "deleted": ["DELETE FROM ledger WHERE sequence = 5"],
    "reordered": [
        "UPDATE ledger SET sequence = 1000000 WHERE sequence = 5",
        "UPDATE ledger SET sequence = 5 WHERE sequence = 6",
        "UPDATE ledger SET sequence = 6 WHERE sequence = 1000000",
    ],
    "deleted-at-end": [
        "DELETE FROM ledger WHERE sequence >= 9",
    ],
    "unhashable": [
        "UPDATE ledger SET payload = jsonb_set(payload, '{n}', ('1' || repeat('0', 400))::jsonb)"
        " WHERE sequence = 5"
    ],
}
EXPECTED = {
    "altered": (5, "altered"),
    "deleted": (5, "missing"),
    "reordered": (5, "reordered"),
    "deleted-at-end": (9, "missing"),
    "unhashable": (5, "altered"),
}


@pytest.mark.parametrize("edit", EDITS)
async def test_an_edit_in_postgresql_is_found_by_the_chain(
    ledger: Pool, owner: Connection, edit: str
) -> None:
    await fill(ledger, 10)
    for statement in EDITS[edit]:
        await unguarded(owner, statement)
    async with ledger.acquire() as conn:
        result = await verify_chain(conn)
    assert not result.ok
    assert result.broken is not None
    assert (result.broken.sequence, result.broken.kind) == EXPECTED[edit], result.broken
    assert result.last_sequence == EXPECTED[edit][0] - 1


@pytest.mark.parametrize("edit", ["altered", "deleted", "reordered", "deleted-at-end"])
async def test_a_rewritten_history_is_found_by_an_earlier_checkpoint(
    ledger: Pool, owner: Connection, edit: str
) -> None:
    await fill(ledger, 10)
    async with ledger.acquire() as conn:
        published = await create_checkpoint(conn, SIGNER)
    assert published.sequence == 10
    await fill(ledger, 2)
    for statement in EDITS[edit]:
        await unguarded(owner, statement)
    # The forger renumbers after a deletion and recomputes every hash, so the
    # chain alone is consistent again...
    if edit == "deleted":
        # (in two steps: the primary key is checked row by row)
        await unguarded(owner, "UPDATE ledger SET sequence = sequence + 1000000 WHERE sequence > 5")
        await unguarded(owner, "UPDATE ledger SET sequence = sequence - 1000001 WHERE sequence > 5")
    await rehash_from(owner, 1 if edit == "deleted-at-end" else 5)
    async with ledger.acquire() as conn:
        assert (await verify_chain(conn)).ok
        # ...and even the stored checkpoints deleted: the party that kept the
        # published token still catches the rewrite.
        await unguarded_checkpoints(owner)
        result = await verify_chain(conn, signer=SIGNER, tokens=[published.token])
    assert not result.ok
    assert result.broken is not None
    if edit == "deleted-at-end":
        assert (result.broken.sequence, result.broken.kind) == (9, "missing")
    else:
        assert (result.broken.sequence, result.broken.kind) == (10, "checkpoint_mismatch")


async def unguarded_checkpoints(owner: Connection) -> None:
    async with owner.transaction():
        await owner.execute(
            "ALTER TABLE ledger_checkpoints DISABLE TRIGGER ledger_checkpoints_append_only"
        )
        await owner.execute("DELETE FROM ledger_checkpoints")
        await owner.execute(
            "ALTER TABLE ledger_checkpoints ENABLE ALWAYS TRIGGER ledger_checkpoints_append_only"
        )


async def test_checkpoints_match_an_untouched_chain(ledger: Pool) -> None:
    await fill(ledger, 4)
    async with ledger.acquire() as conn:
        early = await create_checkpoint(conn, SIGNER)
    await fill(ledger, 4)
    async with ledger.acquire() as conn:
        await create_checkpoint(conn, SIGNER)
        result = await verify_chain(conn, signer=SIGNER, tokens=[early.token])
    assert result.ok, result.broken
    assert (result.checkpoints_matched, result.anchored_at) == (3, 8)


async def test_a_checkpoint_not_signed_by_the_platform_is_reported(ledger: Pool) -> None:
    await fill(ledger, 2)
    async with ledger.acquire() as conn:
        forged = await create_checkpoint(conn, HmacSigner(b"someone else's key"))
        result = await verify_chain(conn, signer=SIGNER)
    assert result.broken is not None
    assert result.broken.kind == "checkpoint_invalid"
    assert forged.token  # stored, but proves nothing


async def test_a_disabled_guard_is_reported(ledger: Pool, owner: Connection) -> None:
    await fill(ledger, 2)
    await owner.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
    async with ledger.acquire() as conn:
        result = await verify_chain(conn)
    assert result.ok
    assert not result.append_only_enforced


async def test_one_agreement_is_verified_with_the_links_around_it(
    ledger: Pool, owner: Connection
) -> None:
    await fill(ledger, 6)
    target = f"agr-{uuid.uuid4().hex[:6]}"
    await record(ledger, target)
    await fill(ledger, 3)
    await record(ledger, target, "granted")
    await fill(ledger, 2)
    async with ledger.acquire() as conn:
        await create_checkpoint(conn, SIGNER)
        result = await verify_entity(conn, "agreement", target, signer=SIGNER)
        assert result.ok, result.broken
        # From its first row (7) through the checkpoint at the head (13).
        assert (result.first_sequence, result.last_sequence, result.anchored_at) == (7, 13, 13)
        with pytest.raises(EntityNotInLedger):
            await verify_entity(conn, "agreement", "agr-unknown")
    # A row between the agreement's rows is part of what proves them.
    await unguarded(owner, "UPDATE ledger SET actor = 'org:x' WHERE sequence = 9")
    async with ledger.acquire() as conn:
        result = await verify_entity(conn, "agreement", target, signer=SIGNER)
    assert result.broken is not None
    assert (result.broken.sequence, result.broken.kind) == (9, "altered")


async def test_payloads_hash_alike_after_a_trip_through_jsonb(ledger: Pool) -> None:
    rng = random.Random(20261202)
    # JSONB refuses NUL characters; appends refuse them first (tested below).
    payloads = [
        p for p in (random_object(rng) for _ in range(3000)) if "\\u0000" not in json.dumps(p)
    ]
    async with ledger.acquire() as conn:
        printed = await conn.fetch(
            "SELECT p::jsonb::text AS printed FROM unnest($1::text[]) WITH ORDINALITY AS t(p, n)"
            " ORDER BY n",
            [json.dumps(p) for p in payloads],
        )
        for payload, row in zip(payloads, printed, strict=True):
            assert canonical_stored_payload(row["printed"]) == rfc8785.dumps(payload), payload
        async with conn.transaction():
            for i, payload in enumerate(payloads[:300]):
                await append(
                    conn,
                    entity_kind="consent",
                    entity_id=f"c-{i}",
                    change="granted",
                    payload=payload,
                    actor="subject:s",
                )
        result = await verify_chain(conn)
    assert result.ok, result.broken
    assert result.rows == 300


async def test_a_rewrite_is_found_by_an_ed25519_checkpoint_made_before_a_key_rotation(
    ledger: Pool, owner: Connection
) -> None:
    ring = KeyRing.generate()
    await fill(ledger, 6)
    async with ledger.acquire() as conn:
        published = await create_checkpoint(conn, KeyRingSigner(ring))
    await unguarded(owner, "UPDATE ledger SET actor = 'org:forger' WHERE sequence = 3")
    await rehash_from(owner, 3)
    await unguarded_checkpoints(owner)
    rotated = KeyRingSigner(ring.rotated(OKPKey.generate_key("Ed25519")))
    async with ledger.acquire() as conn:
        result = await verify_chain(conn, signer=rotated, tokens=[published.token])
    assert result.broken is not None
    assert (result.broken.sequence, result.broken.kind) == (6, "checkpoint_mismatch")


async def ledger_command(database_url: str, schema: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "datapolis_consent.ledger",
        *args,
        env={
            **os.environ,
            "CONSENT_DEV": "true",
            "CONSENT_POSTGRES__DSN": database_url,
            "CONSENT_POSTGRES__DB_SCHEMA": schema,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


async def test_the_command_checks_the_chain_or_one_agreement_against_published_checkpoints(
    ledger: Pool, owner: Connection, database_url: str, schema: str
) -> None:
    await fill(ledger, 6)
    status, token = await ledger_command(database_url, schema, "checkpoint")
    assert status == 0, token
    status, out = await ledger_command(database_url, schema, "verify", "--agreement", "agr-1")
    assert status == 0, out
    assert json.loads(out)["anchored_at"] == 6

    await unguarded(owner, "UPDATE ledger SET change = 'revoked' WHERE sequence = 2")
    await rehash_from(owner, 2)
    await unguarded_checkpoints(owner)
    status, out = await ledger_command(database_url, schema, "verify")
    assert status == 0, out  # the rewrite is consistent, and the stored checkpoint is gone...
    status, out = await ledger_command(
        database_url, schema, "verify", "--checkpoint", token.strip()
    )
    assert status == 1, out  # ...but the published one catches it
    assert json.loads(out)["broken"]["kind"] == "checkpoint_mismatch"
    status, out = await ledger_command(database_url, schema, "verify", "--consent", "nope")
    assert status == 2
    assert "no ledger row" in out
