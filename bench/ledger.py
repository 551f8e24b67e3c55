"""Consent ledger benchmark: appends, then verification of the whole chain.
Prints figures; it is not a timed test.

    uv run python bench/ledger.py [--rows 100000] [--per-transaction 1]   (make bench)

On the PostgreSQL of DATABASE_URL (default: the local stack), in a schema of
its own that it drops at the end. It appends ``--rows`` rows through the
ledger's ``append`` (agreement and consent changes with payloads shaped like
the service's), several per transaction if asked, and prints appends per
second. Then it signs a checkpoint of the head (Ed25519 JWS) and times
``verify_chain`` against it, three times (the target: 100,000 rows in at most
5 s), and ``verify_entity`` for one agreement.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import asyncpg

from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger import append, create_checkpoint, verify_chain, verify_entity
from datapolis_consent.ledger.chain import Payload
from datapolis_consent.ledger.jws import KeyRingSigner
from datapolis_shared.postgres.migrate import apply, service_migrations

DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql://datapolis:datapolis@127.0.0.1:55432/datapolis"
)


def payload_of(i: int) -> Payload:
    return {
        "dataset": f"ds-{i % 50}",
        "consumer": f"org-{i % 200}",
        "project": {"name": "Heat map of the districts", "purposes": ["dpv:ScientificResearch"]},
        "fields": ["meter_id", "kwh", "measured_at"],
        "period": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
        "reason": None,
        "rate_per_s": 12.5,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--per-transaction", type=int, default=1)
    args = parser.parse_args()

    schema = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    await apply(DATABASE_URL, schema, service_migrations("datapolis_consent"))
    conn = await asyncpg.connect(DATABASE_URL, server_settings={"search_path": schema})
    try:
        started = time.perf_counter()
        for first in range(0, args.rows, args.per_transaction):
            async with conn.transaction():
                for i in range(first, min(first + args.per_transaction, args.rows)):
                    # An agreement's history opens with its request (verify_entity checks it).
                    agreement = bool(i % 4)
                    await append(
                        conn,
                        entity_kind="agreement" if agreement else "consent",
                        entity_id=f"e-{i % 5000}",
                        change="requested" if agreement and i < 5000 else "granted",
                        payload=payload_of(i),
                        actor=f"org:{i % 200}",
                    )
        elapsed = time.perf_counter() - started
        print(
            f"appended {args.rows:,} rows, {args.per_transaction} per transaction: "
            f"{elapsed:.1f} s, {args.rows / elapsed:,.0f} appends/s (one connection)"
        )

        signer = KeyRingSigner(KeyRing.generate())
        await create_checkpoint(conn, signer)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            result = await verify_chain(conn, signer=signer)
            times.append(time.perf_counter() - started)
            assert result.ok, result.broken
            assert result.rows == args.rows
            assert result.checkpoints_matched == 1
        print(
            f"verify_chain, {args.rows:,} rows against a checkpoint at the head: "
            f"median {statistics.median(times):.2f} s, best {min(times):.2f} s "
            f"({args.rows / min(times):,.0f} rows/s); target 100,000 rows in at most 5 s"
        )
        started = time.perf_counter()
        # An agreement whose rows start early and recur to the end.
        first_row = max(1, args.rows // 40) | 1
        agreement = f"e-{first_row % 5000}"
        entity = await verify_entity(conn, "agreement", agreement, signer=signer)
        assert entity.ok, entity.broken
        print(
            f"verify_entity, one agreement (rows {entity.first_sequence} to "
            f"{entity.last_sequence}, through the checkpoint): "
            f"{time.perf_counter() - started:.2f} s"
        )
    finally:
        await conn.close()
        cleanup = await asyncpg.connect(DATABASE_URL)
        await cleanup.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await cleanup.close()


if __name__ == "__main__":
    asyncio.run(main())
