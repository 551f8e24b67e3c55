"""Ingest benchmark: prints figures, it is not a timed test.

    uv run python bench/ingest.py            (make bench)

Against the real broker and PostgreSQL (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL;
defaults: the local stack), on loopback, in one run:

(a) baseline: the raw aiokafka producer (acks=all, idempotent) sending
    the same ~350-byte records as (b) to a topic of its own, records/s;
(b) sustained records/s through POST /datasets/{slug}/records of ONE ingest
    process (``python -m datapolis_ingest api`` started here as a subprocess),
    batches of 100 records, schema validation on, several concurrent clients;
    and the ratio to (a);
(c) p50/p99 request latency at a steady offered load of 5,000 records/s
    (50 batches of 100 per second, open loop: a batch leaves on schedule
    whatever the earlier answers take).

Targets: (b) at least 0.6x (a) on the median of the rounds; p99 of (c) at
most 30 ms.

(a) and (b) alternate over ``--rounds`` rounds (3), each round with records of
its own, so both see the machine in the same state; every round is printed
and the verdict is on the medians. Each round also prints the CPU time per
record of (a)'s producer, of (b)'s ingest process and of its HTTP client,
which the other loads of a shared machine disturb less than the rates.

The client is aiohttp with pre-encoded bodies, so the load generator spends
as little of the machine's CPU as it can; it still shares the cores with the
broker and the ingest process, as a producer on the same host would.
Bounded in count and time; everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from datapolis_shared.auth import generate_key
from datapolis_shared.events.catalog import ApiKeyIssued, DatasetRegistered, SchemaVersionAdded
from datapolis_shared.kafka import Producer, TopicSpec, control_topic_specs, ensure_topics
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.settings import KafkaSettings

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql://datapolis:datapolis@127.0.0.1:55432/datapolis"
)
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "meter_id": {"type": "string", "pattern": "^m-[0-9]+$"},
        "measured_at": {"type": "string", "format": "date-time"},
        "kwh": {"type": "number", "minimum": 0},
        "voltage": {"type": "number", "minimum": 0, "maximum": 1000},
        "current": {"type": "number", "minimum": 0},
        "power_factor": {"type": "number", "minimum": 0, "maximum": 1},
        "tariff": {"enum": ["HP", "HC", "BASE"]},
        "district": {"type": "string", "maxLength": 64},
        "quality": {"enum": ["measured", "estimated"]},
        "location": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
            "required": ["lat", "lon"],
        },
        "firmware": {"type": "string"},
        "source": {"type": "string"},
    },
    "required": ["id", "meter_id", "measured_at", "kwh"],
}
# The targets: HTTP ingest at least this fraction of the raw producer's rate
# (median of the rounds), and this p99 at 5,000 records/s.
MIN_RATIO = 0.6
MAX_P99_MS = 30
DISTRICTS = ["Croix-Rousse", "Part-Dieu", "Confluence", "Vaise", "Gerland", "Monplaisir"]


def record(i: int) -> dict[str, Any]:
    return {
        "id": f"{uuid.uuid4()}",
        "meter_id": f"m-{i % 5000:05d}",
        "measured_at": "2025-03-01T12:00:00+00:00",
        "kwh": round(12.345 + (i % 1000) / 7, 3),
        "voltage": 229.8,
        "current": 4.21,
        "power_factor": 0.97,
        "tariff": ("HP", "HC", "BASE")[i % 3],
        "district": DISTRICTS[i % len(DISTRICTS)],
        "quality": "measured",
        "location": {"lat": 45.7640 + (i % 100) / 1e4, "lon": 4.8357 + (i % 100) / 1e4},
        "firmware": "lnk-2.4.17-build-20250114",
        "source": "smart-meter-gateway/lyon-metropole",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def baseline(topic: str, values: list[tuple[bytes, bytes]]) -> float:
    """(a) The raw aiokafka producer: send() every record, await every ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        await (await producer.send(topic, values[0][1], key=values[0][0]))  # metadata, warm-up
        started = time.perf_counter()
        pending = []
        for key, value in values:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        return len(values) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def sustained(
    url: str, headers: dict[str, str], bodies: list[bytes], clients: int, per_batch: int
) -> tuple[float, dict[int, int]]:
    """(b) Closed loop: ``clients`` connections posting batches back to back."""
    statuses: dict[int, int] = {}
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            for body in queue:
                async with session.post(url, data=body) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return statuses.get(200, 0) * per_batch / elapsed, statuses


async def latency(
    url: str, headers: dict[str, str], bodies: list[bytes], rate: float
) -> tuple[list[float], dict[int, int]]:
    """(c) Open loop: a batch every 1/rate s whatever the answers take."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(body: bytes) -> None:
            started = time.perf_counter()
            async with session.post(url, data=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append(time.perf_counter() - started)

        tasks = []
        start = time.perf_counter()
        for n, body in enumerate(bodies):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return latencies, statuses


async def wait_until_accepting(url: str, headers: dict[str, str], body: bytes) -> None:
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.post(url, data=body) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise SystemExit("ingest did not start accepting records within 90 s")
            await asyncio.sleep(0.3)


def start_ingest(port: int, run: str, db_schema: str) -> subprocess.Popen[bytes]:
    """ONE ingest process, as deployed: ``python -m datapolis_ingest api``."""
    env = {
        **os.environ,
        "INGEST_DEV": "true",
        "INGEST_SERVICE_NAME": f"bench-{run}",
        "INGEST_LOG_LEVEL": "WARNING",
        "INGEST_KAFKA__BOOTSTRAP_SERVERS": KAFKA,
        "INGEST_POSTGRES__DSN": DATABASE_URL,
        "INGEST_POSTGRES__DB_SCHEMA": db_schema,
    }
    # BENCH_PROFILE=<file> runs the ingest process under cProfile (for pstats).
    profile = os.environ.get("BENCH_PROFILE")
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, *profiler, "-m", "datapolis_ingest", "api", "--port", str(port)],
        env=env,
    )
    return server


async def register_dataset(kafka: KafkaSettings, run: str, slug: str, data_topic: str) -> str:
    """As catalog does: a key for the publisher, the dataset, its schema."""
    org, key = f"org-bench-{run}", generate_key()
    catalog = Producer(kafka, client_id="bench-catalog")
    await catalog.start()
    dataset_id = f"ds-{run}"
    await catalog.send_event(
        ApiKeyIssued(
            key_id=key.key_id,
            org_id=org,
            scopes=["ingest"],
            secret_hash=key.secret_hash,
            issued_at=datetime.now(UTC),
        )
    )
    await catalog.send_event(
        DatasetRegistered(
            dataset_id=dataset_id,
            slug=slug,
            publisher_id=org,
            access_level="open",
            key_field_name="meter_id",
            topic_name=data_topic,
        )
    )
    await catalog.send_event(
        SchemaVersionAdded(
            dataset_id=dataset_id,
            slug=slug,
            version=1,
            major=1,
            topic_name=data_topic,
            json_schema=SCHEMA,
        )
    )
    await catalog.stop()

    return key.token


async def cleanup(topics: list[str], db_schema: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        await conn.execute(f'DROP SCHEMA "{db_schema}" CASCADE')
    finally:
        await conn.close()


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of a process, this one by default: a figure
    the other loads of a shared machine disturb less than a rate."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as stat:  # Linux
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def encoded(
    first: int, count: int, per_batch: int
) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """Records ``first`` .. ``first + count`` as (key, value) pairs for the raw
    producer and as HTTP bodies of ``per_batch``: each round gets records of
    its own (fresh ids), so none is dropped as a duplicate of an earlier round."""
    rows = [record(i) for i in range(first, first + count)]
    pairs = [(r["meter_id"].encode(), orjson.dumps(r)) for r in rows]
    bodies = [orjson.dumps(rows[i : i + per_batch]) for i in range(0, count, per_batch)]
    return pairs, bodies


async def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a) then (b)")
    parser.add_argument("--batch", type=int, default=100, help="records per HTTP batch")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="batches/s for (c) (x --batch = records/s)"
    )
    parser.add_argument("--latency-s", type=float, default=10.0, help="duration of (c)")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    slug, db_schema = f"bench-{run}", f"bench_{run}"
    data_topic, baseline_topic = f"data.{slug}", f"bench.baseline.{run}"
    kafka = KafkaSettings(bootstrap_servers=KAFKA)
    await ensure_topics(
        kafka, [*control_topic_specs(), TopicSpec(data_topic, 3), TopicSpec(baseline_topic, 3)]
    )
    await apply(DATABASE_URL, db_schema, service_migrations("datapolis_ingest"))

    count = args.records - args.records % args.batch
    size = statistics.mean(len(orjson.dumps(record(i))) for i in range(1000))
    print(
        f"records: {count:,} of ~{size:.0f} bytes per round, batches of {args.batch}, "
        f"{args.rounds} round(s) of (a) then (b); broker {KAFKA}"
    )

    token = await register_dataset(kafka, run, slug, data_topic)
    port = free_port()
    server = start_ingest(port, run, db_schema)
    try:
        url = f"http://127.0.0.1:{port}/datasets/{slug}/records"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        _, warm_up = encoded(0, 21 * args.batch, args.batch)
        await wait_until_accepting(url, headers, warm_up.pop())
        await sustained(url, headers, warm_up, args.clients, args.batch)

        # (a) and (b) alternate, so both see the machine in the same state;
        # the verdict is on the medians.
        rates_a: list[float] = []
        rates_b: list[float] = []
        for n in range(args.rounds):
            pairs, bodies = encoded((n + 1) * count, count, args.batch)
            started_a = cpu_seconds()
            rate_a = await baseline(baseline_topic, pairs)
            cpu_a = cpu_seconds() - started_a
            started_b, started_client = cpu_seconds(server.pid), cpu_seconds()
            rate_b, statuses = await sustained(url, headers, bodies, args.clients, args.batch)
            cpu_b = cpu_seconds(server.pid) - started_b
            cpu_client = cpu_seconds() - started_client
            rates_a.append(rate_a)
            rates_b.append(rate_b)
            print(
                f"round {n + 1}: (a) raw aiokafka producer (acks=all, idempotent) "
                f"{rate_a:,.0f} records/s; (b) HTTP ingest, 1 process, {args.clients} clients "
                f"{rate_b:,.0f} records/s ({statuses.get(200, 0) * args.batch:,} acknowledged, "
                f"statuses {statuses}); ratio {rate_b / rate_a:.2f}x\n"
                f"  CPU per record: (a) producer {cpu_a / count * 1e6:.1f} us; "
                f"(b) ingest process {cpu_b / count * 1e6:.1f} us, "
                f"HTTP client {cpu_client / count * 1e6:.1f} us"
            )
        median_a, median_b = statistics.median(rates_a), statistics.median(rates_b)
        ratio = statistics.median(b / a for a, b in zip(rates_a, rates_b, strict=True))
        verdict = "meets" if ratio >= MIN_RATIO else "misses"
        print(
            f"median: (a) {median_a:,.0f} records/s, (b) {median_b:,.0f} records/s, "
            f"ratio HTTP / raw producer {ratio:.2f}x ({verdict} >= {MIN_RATIO}x)"
        )

        _, timed = encoded(
            (args.rounds + 1) * count, int(args.rate * args.latency_s) * args.batch, args.batch
        )
        latencies, statuses = await latency(url, headers, timed, args.rate)
        latencies.sort()
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        verdict = "meets" if p99 <= MAX_P99_MS else "misses"
        print(
            f"(c) latency at {args.rate:.0f} batches/s ({args.rate * args.batch:,.0f} records/s) "
            f"open loop, {len(latencies)} requests: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"({verdict} p99 <= {MAX_P99_MS} ms; statuses {statuses})"
        )
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn's graceful stop
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        await cleanup([data_topic, baseline_topic], db_schema)


if __name__ == "__main__":
    asyncio.run(main())
