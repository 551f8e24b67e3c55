"""Live stats: the faust worker (``python -m datapolis_catalog worker``, run
as its own process) turns ingest's BatchIngested events into records per
minute, last record time and rejection rate on the dataset's page; a value
that is not an event is dead-lettered and the counting goes on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.events.ingest import BatchIngested
from datapolis_shared.kafka import DEAD_LETTERS, OutgoingRecord, Producer
from tests.conftest import TopicFactory, _free_port
from tests.integration.catalog.conftest import CatalogApp


def _batch(
    dataset_id: str, slug: str, accepted: int, rejected: int, at: datetime, *, topic: str = ""
) -> OutgoingRecord:
    event = BatchIngested(
        dataset_id=dataset_id,
        slug=slug,
        producer_org_id="org-producer",
        channel="http",
        accepted=accepted,
        rejected=rejected,
        received_at=at,
    )
    value, headers = to_structured(event.to_cloudevent())
    return OutgoingRecord(topic or event.topic, value, dataset_id.encode(), headers)


async def test_stats_worker_serves_live_stats(
    catalog: CatalogApp, producer: Producer, new_topic: TopicFactory, tmp_path: Path
) -> None:
    org = await catalog.organisation()
    dataset = await catalog.dataset(org)
    dataset_id, slug = dataset["dataset_id"], dataset["slug"]
    source = await new_topic("ingest-events", partitions=3)

    now = datetime.now(UTC)
    last = now + timedelta(milliseconds=300)
    records = [OutgoingRecord(source, b"{not an event", dataset_id.encode(), [])]
    records += [_batch(dataset_id, slug, 25, 5, now) for _ in range(3)]
    records += [_batch(dataset_id, slug, 25, 5, last)]
    # A dataset this catalog does not know: counted, never written.
    records += [_batch("someone-elses-dataset", "other", 10, 0, now)]
    await producer.send_many([OutgoingRecord(source, r.value, r.key, r.headers) for r in records])

    settings = catalog.settings
    env = {
        **os.environ,
        "CATALOG_DEV": "true",
        "CATALOG_SERVICE_NAME": settings.service_name,
        "CATALOG_LOG_JSON": "false",
        "CATALOG_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "CATALOG_POSTGRES__DSN": settings.postgres.dsn.get_secret_value(),
        "CATALOG_POSTGRES__DB_SCHEMA": settings.postgres.db_schema,
        "CATALOG_STATS__SOURCE_TOPIC": source,
        "CATALOG_STATS__FLUSH_INTERVAL_S": "1",
        "CATALOG_STATS__DATA_DIR": str(tmp_path / "faust"),
        # Its probe server, on a port of its own (8000, the default, may be taken).
        "CATALOG_WORKER_HTTP__PORT": str(_free_port()),
    }
    pool = catalog.app.state.runtime.pool
    try:
        async with _worker(env, tmp_path / "worker-1.log") as worker:
            stats = await _stats_once(catalog, org.publisher, slug, accepted=100, worker=worker)
        assert stats["rejected_last_hour"] == 20
        assert abs(stats["rejection_rate"] - 20 / 120) < 1e-6
        # All four batches fell in the current minute or the one before it.
        assert 0 < stats["records_per_minute"] <= 100
        assert datetime.fromisoformat(stats["last_record_at"]) == last
        unknown = await pool.fetchval(
            "SELECT count(*) FROM dataset_stats WHERE dataset_id = 'someone-elses-dataset'"
        )
        assert unknown == 0

        # A restarted worker recovers its windows from the changelog: the
        # batches it already committed still count, plus the new one.
        await pool.execute("DELETE FROM dataset_stats")
        later = datetime.now(UTC)
        await producer.send(_batch(dataset_id, slug, 7, 0, later, topic=source))
        async with _worker(env, tmp_path / "worker-2.log") as worker:
            stats = await _stats_once(catalog, org.publisher, slug, accepted=107, worker=worker)
        assert stats["rejected_last_hour"] == 20
        assert datetime.fromisoformat(stats["last_record_at"]) == later
    finally:
        await _delete_worker_topics(settings.kafka.bootstrap_servers, settings.service_name)

    parked = await _dead_letters_from(settings.kafka.bootstrap_servers, source)
    assert [r.value for r in parked] == [b"{not an event"]
    assert ("dl_consumer", b"catalog-stats") in list(parked[0].headers)


@dataclass
class Worker:
    process: asyncio.subprocess.Process
    log: Path
    probe_port: str

    async def readiness(self) -> str:
        """Its ``/readyz`` answer (which checks say why it is not ready)."""
        url = f"http://127.0.0.1:{self.probe_port}/readyz"
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                answer = await client.get(url)
        except httpx.HTTPError as exc:
            return f"{url}: {exc!r}"
        return f"{url}: {answer.status_code} {answer.text}"

    def log_lines(self) -> str:
        """Its log, without faust's offset tables."""
        lines = self.log.read_text().splitlines()
        return "\n".join(line for line in lines if line[:1].isdigit())[-6000:]


@contextlib.asynccontextmanager
async def _worker(env: dict[str, str], log_path: Path) -> AsyncIterator[Worker]:
    """``python -m datapolis_catalog worker`` as its own process."""
    with log_path.open("wb") as log:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "datapolis_catalog",
            "worker",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Worker(worker, log_path, env["CATALOG_WORKER_HTTP__PORT"])
    finally:
        if worker.returncode is None:
            worker.terminate()
            try:
                await asyncio.wait_for(worker.wait(), timeout=20)
            except TimeoutError:
                worker.kill()
                await worker.wait()


async def _stats_once(
    catalog: CatalogApp, headers: dict[str, str], slug: str, *, accepted: int, worker: Worker
) -> dict[str, Any]:
    """The dataset's stats once they count ``accepted`` records."""
    stats = None
    # Generous: a worker's start (group join, changelog recovery) on a
    # machine busy with other suites has taken over 40 s.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and worker.process.returncode is None:
        page = await catalog.client.get(f"/datasets/{slug}", headers=headers)
        stats = page.json()["stats"]
        if stats and stats["accepted_last_hour"] == accepted:
            return dict(stats)
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"stats {stats}; worker exit code {worker.process.returncode}; "
        f"readiness {await worker.readiness()}; log:\n{worker.log_lines()}"
    )


async def _dead_letters_from(bootstrap: str, source: str) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(DEAD_LETTERS, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        found: list[ConsumerRecord[bytes, bytes]] = []
        while await consumer.position(partition) < end:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [r for r in records if ("dl_source_topic", source.encode()) in r.headers]
        return found
    finally:
        await consumer.stop()


async def _delete_worker_topics(bootstrap: str, service_name: str) -> None:
    """faust's changelog topics of this test's worker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        prefix = f"datapolis-{service_name}-stats"
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
