"""The consent worker as a real process: it signs a checkpoint of the
ledger's head when the head moved, once per head however many replicas run,
and serves /healthz, /readyz and /metrics like the other workers."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger import append, open_checkpoint, verify_chain
from datapolis_consent.ledger.jws import KeyRingSigner
from datapolis_consent.settings import DEV_RECEIPT_SIGNING_KEY
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import KafkaSettings
from tests.conftest import _free_port
from tests.e2e.test_workers import _sample
from tests.infra import REPO
from tests.kafka_util import eventually

SIGNER = KeyRingSigner(KeyRing.load(DEV_RECEIPT_SIGNING_KEY, []))
# Waits for processes to start and connect; they end as soon as the condition holds.
START_WAIT_S = 60
# Several intervals of the worker's (set below), however loaded the machine.
TICK_WAIT_S = 30


@dataclass
class Worker:
    url: str
    log: Path
    process: asyncio.subprocess.Process

    async def get(self, path: str) -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return await client.get(self.url + path)
        except httpx.TransportError:
            return None

    async def status(self, path: str) -> int:
        answer = await self.get(path)
        return 0 if answer is None else answer.status_code

    async def metric(self, name: str) -> float | None:
        answer = await self.get("/metrics")
        return None if answer is None else _sample(answer.text, name)


WorkerFactory = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(
    kafka_settings: KafkaSettings, database_url: str, tmp_path: Path
) -> AsyncIterator[WorkerFactory]:
    started: list[Worker] = []

    async def start(schema: str, *, dsn: str = database_url, interval_s: float = 0.2) -> Worker:
        port = _free_port()
        env = {
            **os.environ,
            "CONSENT_DEV": "true",
            "CONSENT_LOG_JSON": "false",
            "CONSENT_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "CONSENT_POSTGRES__DSN": dsn,
            "CONSENT_POSTGRES__DB_SCHEMA": schema,
            "CONSENT_WORKER_HTTP__PORT": str(port),
            "CONSENT_CHECKPOINT_INTERVAL_S": str(interval_s),
        }
        log = tmp_path / f"consent-worker-{len(started)}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "datapolis_consent",
                "worker",
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        worker = Worker(f"http://127.0.0.1:{port}", log, process)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.returncode is None:
            worker.process.terminate()
    for worker in started:
        try:
            await asyncio.wait_for(worker.process.wait(), 30)
        except TimeoutError:
            worker.process.kill()
            await worker.process.wait()
            pytest.fail("the consent worker did not stop within 30 s of SIGTERM")


async def until(what: str, check: Callable[[], Awaitable[bool]], *workers: Worker) -> None:
    try:
        await eventually(check, timeout_s=START_WAIT_S)
    except AssertionError as exc:
        logs = "\n".join(w.log.read_text(errors="replace")[-3000:] for w in workers)
        raise AssertionError(f"{what}: {exc}\n{logs}") from exc


@pytest.fixture
async def ledger(database_url: str, schema: str, pool: Pool) -> Pool:
    await apply(database_url, schema, service_migrations("datapolis_consent"))
    return pool


async def record(pool: Pool, n: int) -> None:
    for i in range(n):
        async with pool.acquire() as conn, conn.transaction():
            await append(
                conn,
                entity_kind="agreement",
                entity_id=f"agr-{i % 3}",
                change="requested",
                payload={"dataset": "ds-meters", "n": i},
                actor="org:consumer",
            )


async def checkpoints(pool: Pool) -> list[Any]:
    return list(await pool.fetch("SELECT sequence, token FROM ledger_checkpoints ORDER BY 1"))


async def test_the_worker_checkpoints_the_head_when_it_moves(
    start_worker: WorkerFactory, ledger: Pool, schema: str
) -> None:
    worker = await start_worker(schema)

    async def ready() -> bool:
        return await worker.status("/readyz") == 200

    await until("/healthz 200", lambda: _is(worker.status("/healthz"), 200), worker)
    await until("/readyz 200", ready, worker)
    answer = await worker.get("/readyz")
    assert answer is not None
    assert answer.json()["checks"]["checkpoints"] == "ok"
    # An empty ledger has nothing to pin.
    assert await worker.metric("datapolis_ledger_checkpoints_published_total") == 0.0
    assert await checkpoints(ledger) == []

    await record(ledger, 3)

    async def published(count: float, sequence: float) -> bool:
        return (
            await worker.metric("datapolis_ledger_checkpoints_published_total") == count
            and await worker.metric("datapolis_ledger_last_checkpoint_sequence") == sequence
        )

    await until("a checkpoint of row 3", lambda: published(1.0, 3.0), worker)
    stored = await checkpoints(ledger)
    assert [row["sequence"] for row in stored] == [3]
    assert open_checkpoint(stored[0]["token"], SIGNER).sequence == 3
    age = await worker.metric("datapolis_ledger_last_checkpoint_age_seconds")
    assert age is not None
    assert 0.0 < age < START_WAIT_S

    await record(ledger, 2)
    await until("a checkpoint of row 5", lambda: published(2.0, 5.0), worker)
    assert [row["sequence"] for row in await checkpoints(ledger)] == [3, 5]
    async with ledger.acquire() as conn:
        result = await verify_chain(conn, signer=SIGNER)
    assert result.ok, result.broken
    assert result.checkpoints_matched == 2


async def _is(status: Awaitable[int], expected: int) -> bool:
    return await status == expected


async def test_two_workers_checkpoint_each_head_once(
    start_worker: WorkerFactory, ledger: Pool, schema: str
) -> None:
    # Ticking often, so their ticks meet.
    workers = [await start_worker(schema, interval_s=0.02) for _ in range(2)]
    for worker in workers:

        async def ready(worker: Worker = worker) -> bool:
            return await worker.status("/readyz") == 200

        await until("/readyz 200", ready, *workers)

    for _ in range(20):
        await record(ledger, 1)
        target = await ledger.fetchval("SELECT sequence FROM ledger_head")

        async def covered(target: int = target) -> bool:
            last = await ledger.fetchval("SELECT max(sequence) FROM ledger_checkpoints")
            return bool(last == target)

        await until(f"a checkpoint of row {target}", covered, *workers)

    sequences = [row["sequence"] for row in await checkpoints(ledger)]
    assert sequences == list(range(1, 21))
    counts = [await w.metric("datapolis_ledger_checkpoints_published_total") for w in workers]
    assert sum(c or 0.0 for c in counts) == 20.0


async def test_not_ready_while_checkpointing_fails_or_postgresql_is_unreachable(
    start_worker: WorkerFactory, database_url: str, schema: str
) -> None:
    # The shared tables only: consent's migration has not run yet.
    worker = await start_worker(schema)

    async def failing() -> bool:
        answer = await worker.get("/readyz")
        if answer is None or answer.status_code != 503:
            return False
        checks = answer.json().get("checks", {})
        return str(checks.get("checkpoints", "")).startswith("checkpointing failed")

    await until("/readyz 503 naming the checkpoints", failing, worker)
    answer = await worker.get("/readyz")
    assert answer is not None
    problem = answer.json()
    assert problem["code"] == "not-ready"
    assert problem["checks"]["postgres"] == "ok"
    assert (await worker.metric("datapolis_ledger_checkpoint_failures_total") or 0.0) >= 1.0
    assert await worker.status("/healthz") == 200

    await apply(database_url, schema, service_migrations("datapolis_consent"))
    await until("/readyz 200 once the tables exist", lambda: _is(worker.status("/readyz"), 200))

    # A worker whose PostgreSQL does not answer is alive but never ready.
    unreachable = f"postgresql://datapolis:datapolis@127.0.0.1:{_free_port()}/datapolis"
    lost = await start_worker(schema, dsn=unreachable)
    await until("/healthz 200", lambda: _is(lost.status("/healthz"), 200), lost)
    answer = await lost.get("/readyz")
    assert answer is not None
    assert answer.status_code == 503
    assert answer.json()["checks"]["startup"] != "ok"
