"""Propagation benchmark: how long after catalog's 201 ingest uses a new
dataset or schema version. Prints figures; it is not a timed test.

    uv run python bench/propagation.py [--trials 30]      (make bench)

Catalog and ingest run as deployed (``python -m datapolis_<service> api``,
one process each, started here), each on a PostgreSQL schema of its own, on
the broker and database of KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL
(defaults: the local stack). The path measured is the whole pipeline:
catalog's outbox relay, ``datapolis.catalog.events``, ingest's registry
consumer, its tables and NOTIFY, the reload in memory.

Each trial registers a dataset and, as soon as catalog answers 201, pushes a
record with ``Datapolis-Schema-Version: 1``, retrying every 10 ms while the
answer is 503 "not known yet"; then it adds schema version 2 (a widening that
version 1 refuses the record for) and does the same with a record of the new
shape. It prints, for each, the time from the 201 to when ingest knew it (the
first push not answered 503) and to the first 200 (p50, p95, max), and how
many first pushes got 503. The README's bound
(``INGEST_PROPAGATION_BOUND_S``) is chosen with a wide margin over the max.
Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient

from datapolis_shared.settings import DEV_OPERATOR_KEY

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql://datapolis:datapolis@127.0.0.1:55432/datapolis"
)
OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}
VERSION_HEADER = "Datapolis-Schema-Version"
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "status": {"type": "string", "enum": ["measured"]},
    },
    "required": ["meter_id", "kwh"],
}
WIDER = {
    **SCHEMA,
    "properties": {
        **SCHEMA["properties"],
        "status": {"type": "string", "enum": ["measured", "estimated"]},
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(service: str, port: int, run: str, db_schema: str) -> subprocess.Popen[bytes]:
    prefix = service.upper()
    env = {
        **os.environ,
        f"{prefix}_DEV": "true",
        f"{prefix}_SERVICE_NAME": f"bench-{service}-{run}",
        f"{prefix}_LOG_LEVEL": "WARNING",
        f"{prefix}_KAFKA__BOOTSTRAP_SERVERS": KAFKA,
        f"{prefix}_POSTGRES__DSN": DATABASE_URL,
        f"{prefix}_POSTGRES__DB_SCHEMA": db_schema,
        f"{prefix}_HTTP__PORT": str(port),
    }
    migrate = [sys.executable, "-m", f"datapolis_{service}", "migrate"]
    subprocess.run(migrate, env=env, check=True)  # noqa: S603 - our own interpreter and module
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", f"datapolis_{service}", "api"], env=env
    )


async def until(check: Any, what: str, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = await check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not within {timeout_s} s")
        await asyncio.sleep(0.2)


async def push_until_accepted(
    ingest: httpx.AsyncClient,
    headers: dict[str, str],
    slug: str,
    record: dict[str, Any],
    v: int,
    patience_s: float = 60,
) -> tuple[float, int, float]:
    """Seconds from now to when ingest knew it (the start of the first push
    not answered 503), the 503s before it, and the seconds to the 200."""
    started, refusals = time.monotonic(), 0
    while True:
        sent = time.monotonic()
        response = await ingest.post(
            f"/datasets/{slug}/records", json=[record], headers={**headers, VERSION_HEADER: str(v)}
        )
        if response.status_code == 200:
            answer = response.json()
            if answer["accepted"] != 1:
                raise SystemExit(f"record refused: {answer}")
            if int(answer["schema_version"]) < v:
                raise SystemExit(f"validated under an older version: {answer}")
            return sent - started, refusals, time.monotonic() - started
        if response.status_code != 503 or "not-known-yet" not in response.json()["code"]:
            raise SystemExit(f"unexpected answer {response.status_code}: {response.text}")
        refusals += 1
        if time.monotonic() - started > patience_s:
            raise SystemExit(f"{slug} v{v} still not known after {patience_s} s")
        await asyncio.sleep(0.01)


def figures(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms"
    )


def summary(name: str, known: list[float], accepted: list[float], refused: int) -> str:
    return (
        f"{name}: 201 -> known {figures(known)}; 201 -> 200 {figures(accepted)} "
        f"({refused} of {len(known)} first pushes got 503 not-known-yet)"
    )


async def cleanup(slugs: list[str], schemas: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for s in slugs for t in (f"data.{s}", f"raw.{s}") if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        for name in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    schemas = [f"bench_catalog_{run}", f"bench_ingest_{run}"]
    catalog_port, ingest_port = free_port(), free_port()
    processes = [
        start("catalog", catalog_port, run, schemas[0]),
        start("ingest", ingest_port, run, schemas[1]),
    ]
    slugs: list[str] = []
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{catalog_port}", timeout=30) as catalog,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ingest_port}", timeout=30) as ingest,
        ):
            for client in (catalog, ingest):
                await until(lambda c=client: _ok(c.get("/readyz")), f"{client.base_url} ready", 180)
            org = await catalog.post(
                "/organisations",
                json={"name": f"Bench {run}", "kind": "company", "contact_email": "a@b.org"},
                headers=OPERATOR,
            )
            org.raise_for_status()
            issued = await catalog.post(
                f"/organisations/{org.json()['org_id']}/keys",
                json={"scopes": ["publish", "ingest", "read"]},
                headers=OPERATOR,
            )
            issued.raise_for_status()
            key = {"Authorization": f"Bearer {issued.json()['token']}"}

            async def key_works() -> bool:
                probe = await ingest.post("/datasets/x-probe/records", json=[{}], headers=key)
                return probe.status_code != 401

            await until(key_works, "the key usable in ingest")

            async def register(slug: str, schema: dict[str, Any]) -> None:
                slugs.append(slug)
                created = await catalog.post(
                    "/datasets",
                    json={
                        "slug": slug,
                        "title": "Banc de propagation",
                        "theme": "energy",
                        "licence": "odbl-1.0",
                        "access_level": "open",
                        "key_field": "meter_id",
                        "partitions": 1,
                        "json_schema": schema,
                    },
                    headers=key,
                )
                created.raise_for_status()

            # Warm-up, not counted: ingest's new consumer group first reads
            # catalog's events from the beginning of the topic.
            await register(f"bench-{run}-warm-up", SCHEMA)
            warm = {"id": "warm", "meter_id": "m-1", "kwh": 1.0}
            await push_until_accepted(ingest, key, f"bench-{run}-warm-up", warm, 1, 300)

            datasets, versions, datasets_ok, versions_ok = [], [], [], []
            refused_datasets = refused_versions = 0
            for i in range(args.trials):
                slug = f"bench-{run}-{i}"
                await register(slug, SCHEMA)
                record = {"id": f"r-{i}", "meter_id": "m-1", "kwh": 1.0}
                known, refusals, ok = await push_until_accepted(ingest, key, slug, record, 1)
                datasets.append(known)
                datasets_ok.append(ok)
                refused_datasets += refusals > 0

                added = await catalog.post(
                    f"/datasets/{slug}/schemas", json={"json_schema": WIDER}, headers=key
                )
                added.raise_for_status()
                newer = {**record, "id": f"r-{i}-2", "status": "estimated"}
                known, refusals, ok = await push_until_accepted(ingest, key, slug, newer, 2)
                versions.append(known)
                versions_ok.append(ok)
                refused_versions += refusals > 0

            print(summary("new dataset", datasets, datasets_ok, refused_datasets))
            print(summary("new schema version", versions, versions_ok, refused_versions))
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        await cleanup(slugs, schemas)


async def _ok(request: Any) -> bool:
    response: httpx.Response = await request
    return response.status_code == 200


if __name__ == "__main__":
    asyncio.run(main())
