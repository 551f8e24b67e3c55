"""The stream workers as real processes, probed the way Kubernetes and
Prometheus probe them: /healthz, /readyz and /metrics on the worker's own port.

Each worker answers /healthz at once, turns ready once Kafka and PostgreSQL
answer and its consumer has its partitions, counts what it consumes in
/metrics, and turns not-ready (naming the failing check) when Kafka stops,
while /healthz keeps answering so the pod is not restarted for an outage.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from datapolis_shared.events import INGEST_EVENTS
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.events.ingest import BatchIngested
from datapolis_shared.kafka import (
    OutgoingRecord,
    Producer,
    TopicSpec,
    control_topic_specs,
    ensure_topics,
)
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.settings import KafkaSettings
from tests.conftest import PrivateKafka, _free_port
from tests.infra import REPO

RAW_TOPIC = "raw.probe-me"


@dataclass
class WorkerProcess:
    service: str
    url: str
    log: Path
    process: asyncio.subprocess.Process

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
async def workers(
    private_kafka: PrivateKafka, database_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, WorkerProcess]]:
    """``python -m datapolis_catalog worker`` and ``... ingest worker`` on a
    broker of the test's own and schemas of their own."""
    kafka = KafkaSettings(bootstrap_servers=private_kafka.bootstrap)
    # What the APIs would have provisioned: the control topics, a raw topic.
    await ensure_topics(kafka, [*control_topic_specs(), TopicSpec(RAW_TOPIC, 1)])
    run_id = uuid.uuid4().hex[:8]
    schemas: list[str] = []
    started: dict[str, WorkerProcess] = {}
    try:
        for service in ("catalog", "ingest"):
            schema = f"e2e_worker_{service}_{run_id}"
            schemas.append(schema)
            await apply(database_url, schema, service_migrations(f"datapolis_{service}"))
            prefix = service.upper()
            port = _free_port()
            env = {
                **os.environ,
                f"{prefix}_DEV": "true",
                f"{prefix}_LOG_JSON": "false",
                f"{prefix}_KAFKA__BOOTSTRAP_SERVERS": private_kafka.bootstrap,
                f"{prefix}_POSTGRES__DSN": database_url,
                f"{prefix}_POSTGRES__DB_SCHEMA": schema,
                f"{prefix}_WORKER_HTTP__PORT": str(port),
                # Catalog: faust's folder; ingest: dead-letter an unknown
                # dataset's records at once rather than waiting for it.
                "CATALOG_STATS__DATA_DIR": str(tmp_path / "faust"),
                "INGEST_UNKNOWN_DATASET_GRACE_S": "0",
            }
            log = tmp_path / f"{service}-worker.log"
            with log.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    f"datapolis_{service}",
                    "worker",
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                )
            started[service] = WorkerProcess(service, f"http://127.0.0.1:{port}", log, process)
        yield started
    finally:
        for worker in started.values():
            if worker.process.returncode is None:
                worker.process.terminate()
        for worker in started.values():
            try:
                await asyncio.wait_for(worker.process.wait(), 30)
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
                pytest.fail(f"the {worker.service} worker did not stop within 30 s of SIGTERM")
        conn = await asyncpg.connect(database_url)
        try:
            for schema in schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def _until(
    what: str,
    check: Callable[[], Awaitable[bool]],
    workers: dict[str, WorkerProcess],
    timeout_s: float,
) -> float:
    """Seconds until ``check`` holds; fails with the workers' logs otherwise."""
    started = time.monotonic()
    while not await check():
        exited = {w.service: w.process.returncode for w in workers.values()}
        if time.monotonic() - started > timeout_s or any(c is not None for c in exited.values()):
            logs = "\n".join(f"--- {w.service}:\n{w.log_tail()}" for w in workers.values())
            raise AssertionError(f"{what}: not within {timeout_s}s (exit codes {exited})\n{logs}")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def _status(client: httpx.AsyncClient, url: str) -> int:
    try:
        return (await client.get(url, timeout=5)).status_code
    except httpx.TransportError:
        return 0


def _sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, or None when absent."""
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    wanted = f"{name}{{{selector}}}" if labels else name
    for line in metrics.splitlines():
        series, _, value = line.rpartition(" ")
        if series == wanted:
            return float(value)
    return None


def _batch_event() -> OutgoingRecord:
    event = BatchIngested(
        dataset_id="ds-probe",
        slug="probe",
        producer_org_id="org-probe",
        channel="http",
        accepted=3,
        rejected=1,
        received_at=datetime.now(UTC),
    )
    value, headers = to_structured(event.to_cloudevent())
    return OutgoingRecord(INGEST_EVENTS, value, b"ds-probe", headers)


async def _produce(bootstrap: str, records: list[OutgoingRecord]) -> None:
    producer = Producer(KafkaSettings(bootstrap_servers=bootstrap), client_id="e2e-workers")
    await producer.start()
    try:
        await producer.send_many(records)
    finally:
        await producer.stop()


async def test_workers_serve_probes_and_metrics(
    workers: dict[str, WorkerProcess], private_kafka: PrivateKafka
) -> None:
    catalog, ingest = workers["catalog"], workers["ingest"]
    consumers = {"catalog": "catalog-stats", "ingest": "raw-validator"}
    async with httpx.AsyncClient(timeout=10) as client:

        async def all_answer(path: str, status: int) -> bool:
            codes = [await _status(client, w.url + path) for w in workers.values()]
            return all(code == status for code in codes)

        async def alive() -> bool:
            return await all_answer("/healthz", 200)

        async def ready() -> bool:
            return await all_answer("/readyz", 200)

        async def not_ready() -> bool:
            return await all_answer("/readyz", 503)

        alive_after = await _until("/healthz 200", alive, workers, timeout_s=60)
        for worker in workers.values():
            assert (await client.get(f"{worker.url}/healthz")).json() == {"status": "alive"}
        ready_after = await _until("/readyz 200", ready, workers, timeout_s=90)
        for service, worker in workers.items():
            body: dict[str, Any] = (await client.get(f"{worker.url}/readyz")).json()
            assert body["status"] == "ready"
            assert body["checks"]["kafka"] == "ok"
            assert body["checks"]["postgres"] == "ok"
            assert body["checks"][f"consumer:{consumers[service]}"] == "ok"

        # What each worker consumes is counted, per outcome.
        await _produce(
            private_kafka.bootstrap,
            [
                _batch_event(),
                OutgoingRecord(INGEST_EVENTS, b"{not an event", b"ds-probe"),
                OutgoingRecord(RAW_TOPIC, b'{"meter_id": "m-1"}', b"m-1"),
            ],
        )
        expected = {
            "catalog": {"processed": 1.0, "dead_lettered": 1.0},
            "ingest": {"processed": 1.0, "dead_lettered": 0.0},
        }
        scraped: dict[str, str] = {}

        async def counted() -> bool:
            for service, worker in workers.items():
                response = await client.get(f"{worker.url}/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                scraped[service] = response.text
            return all(
                _sample(
                    scraped[service],
                    "datapolis_events_consumed_total",
                    consumer=consumers[service],
                    outcome=outcome,
                )
                == value
                for service, outcomes in expected.items()
                for outcome, value in outcomes.items()
            )

        await _until("the consumed records counted in /metrics", counted, workers, timeout_s=30)
        for text in scraped.values():
            assert _sample(text, "datapolis_ready") == 1.0
            assert "# TYPE datapolis_events_consumed_total counter" in text

        # Kafka stops: not ready, naming the check; alive all the same.
        stopping = asyncio.create_task(private_kafka.stop())
        down_after = await _until("/readyz 503 once Kafka stops", not_ready, workers, timeout_s=30)
        await stopping
        for worker in (catalog, ingest):
            response = await client.get(f"{worker.url}/readyz")
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == "5"
            problem = response.json()
            assert problem["code"] == "not-ready"
            assert problem["checks"]["kafka"] != "ok"
            assert problem["checks"]["postgres"] == "ok"
            assert (await client.get(f"{worker.url}/healthz")).status_code == 200

        await private_kafka.start()
        back_after = await _until("/readyz 200 once Kafka is back", ready, workers, timeout_s=90)
        # Ready again means consuming again.
        await _produce(
            private_kafka.bootstrap,
            [_batch_event(), OutgoingRecord(RAW_TOPIC, b'{"meter_id": "m-2"}', b"m-2")],
        )
        expected["catalog"]["processed"] = expected["ingest"]["processed"] = 2.0
        await _until("records consumed after the restart", counted, workers, timeout_s=60)
    print(
        f"workers: alive after {alive_after:.1f}s, ready after {ready_after:.1f}s, "
        f"503 {down_after:.1f}s after Kafka stopped, 200 {back_after:.1f}s after it restarted"
    )
