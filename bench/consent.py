"""Consent benchmark: agreement grants and revocations through HTTP, and how
soon a revocation is on Kafka. Prints figures; it is not a timed test.

    uv run python bench/consent.py [--agreements 600] [--rate 100] [--latency-s 10]
                                                                  (make bench)

Against the real broker and PostgreSQL (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL;
defaults: the local stack). ONE consent process, as deployed
(``python -m datapolis_consent api``, started here), on a PostgreSQL schema of
its own, learns a publisher's and a consumer's keys and a shared dataset from
catalog's events, as it does in production. Then, over real HTTP on loopback:

(a) baseline, measured in the same run: the bare round trip a revocation
    cannot do without, one PostgreSQL transaction that INSERTs a row and
    commits, then one Kafka record produced and acknowledged (acks=all,
    idempotent), from this process: operations/s from ``--clients``
    concurrent callers, and p50/p99 at ``--rate`` per second (open loop);
    and the time from the ack to the record being read by a consumer
    tailing the topic;
(b) grants/s: the publisher grants ``--agreements`` requests (made by the
    consumer beforehand), ``--clients`` concurrent callers;
(c) revocations/s: the publisher revokes them, ``--clients`` concurrent
    callers (a revocation answers only once its event is acknowledged by
    Kafka);
(d) revocation answered, p50/p99, at a steady ``--rate`` revocations/s
    (open loop: a call leaves on schedule whatever the earlier answers take);
(e) for the revocations of (d), the time from the call's answer to its
    ``agreement.revoked`` event being read by a consumer tailing
    ``datapolis.consent.events``, p50/p99.

Targets: (d) p99 at most 50 ms at 100 revocations/s. The ratios put (c)
and (d) beside (a): what the ledger row, the projection, the outbox relay
and HTTP add to the bare round trip. Ledger verification of 100,000 rows is
``bench/ledger.py``. Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from datapolis_shared.auth import generate_key
from datapolis_shared.events.base import CONSENT_EVENTS
from datapolis_shared.events.catalog import ApiKeyIssued, DatasetRegistered, SchemaVersionAdded
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.kafka import (
    OutgoingRecord,
    Producer,
    TopicSpec,
    control_topic_specs,
    ensure_topics,
)
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.settings import KafkaSettings

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql://datapolis:datapolis@127.0.0.1:55432/datapolis"
)
MAX_P99_MS = 50
REVOKED = b"org.datapolis.consent.agreement.revoked.v1"
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "measured_at": {"type": "string"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    "required": ["meter_id", "kwh"],
}
Call = Callable[[int], Awaitable[int]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process: what one revocation costs the
    service, steadier than a rate when other loads share the machine."""
    with open(f"/proc/{pid}/stat") as stat:  # Linux
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1e3:.1f} ms, p99 {percentile(values, 0.99) * 1e3:.1f} ms"
    )


async def closed_loop(call: Call, count: int, clients: int) -> tuple[float, dict[int, int]]:
    """``clients`` callers, each starting its next call when the last one
    answered; calls per second and the statuses."""
    statuses: dict[int, int] = {}
    queue = iter(range(count))

    async def caller() -> None:
        for n in queue:
            status = await call(n)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    return count / (time.perf_counter() - started), statuses


async def open_loop(
    call: Call, count: int, rate: float
) -> tuple[list[float], dict[int, float], dict[int, float], dict[int, int]]:
    """A call every 1/rate s whatever the answers take: latencies, the
    moments (perf_counter) each call was answered and sent, and the statuses."""
    latencies: list[float] = []
    answered: dict[int, float] = {}
    statuses: dict[int, int] = {}

    async def one(n: int) -> None:
        started[n] = time.perf_counter()
        status = await call(n)
        answered[n] = time.perf_counter()
        latencies.append(answered[n] - started[n])
        statuses[status] = statuses.get(status, 0) + 1

    started: dict[int, float] = {}
    tasks = []
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return latencies, answered, started, statuses


class Tail:
    """A consumer reading ``topic`` from its end: when each key was first
    read (perf_counter), for records whose value contains ``marker``."""

    def __init__(self, topic: str, marker: bytes | None = None) -> None:
        self.topic = topic
        self.marker = marker
        self.seen: dict[bytes, float] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=KAFKA, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for partition in assigned:  # resolve the end offsets now, not at the first read
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    if self.marker is None or self.marker in (record.value or b""):
                        self.seen.setdefault(record.key or b"", now)

    async def wait_for(self, keys: list[bytes], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        for key in keys:
            while key not in self.seen and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polled: the reader task fills ``seen``

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


def lags(tail: Tail, keys: list[bytes], moments: dict[int, float]) -> tuple[list[float], int]:
    """From each call's moment (its answer, or its start) to its key's record
    being read; how many never came. Negative: read before the answer."""
    found = [tail.seen[key] - moments[n] for n, key in enumerate(keys) if key in tail.seen]
    return found, len(keys) - len(found)


async def baseline(
    topic: str, db_schema: str, clients: int, count: int, rate: float, seconds: float
) -> tuple[float, list[float], list[float]]:
    """(a) INSERT + commit, then produce and await the ack."""
    pool = await asyncpg.create_pool(
        DATABASE_URL, min_size=clients, max_size=clients, server_settings={"search_path": db_schema}
    )
    await pool.execute(
        "CREATE TABLE bench_changes (id TEXT PRIMARY KEY, body JSONB NOT NULL, at TIMESTAMPTZ)"
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA, acks="all", enable_idempotence=True, linger_ms=0
    )
    await producer.start()
    tail = Tail(topic)
    await tail.start()
    body = orjson.dumps({"agreement_id": str(uuid.uuid4()), "reason": "breach of terms" * 4})
    run = uuid.uuid4().hex[:6]

    async def call(n: int, prefix: str) -> int:
        key = f"{prefix}-{run}-{n}"
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO bench_changes VALUES ($1, $2::text::jsonb, now())", key, body.decode()
            )
        await producer.send_and_wait(topic, body, key=key.encode())
        return 200

    try:
        await producer.send_and_wait(topic, body, key=b"warm-up")
        rate_a, _ = await closed_loop(lambda n: call(n, "closed"), count, clients)
        timed = int(rate * seconds)
        latencies, answered, _, _ = await open_loop(lambda n: call(n, "open"), timed, rate)
        keys = [f"open-{run}-{n}".encode() for n in range(timed)]
        await tail.wait_for(keys)
        readable, _ = lags(tail, keys, answered)
        return rate_a, latencies, readable
    finally:
        await tail.stop()
        await producer.stop()
        await pool.close()


def start_consent(
    port: int, run: str, db_schema: str, catalog_topic: str
) -> subprocess.Popen[bytes]:
    """ONE consent process, as deployed: ``python -m datapolis_consent api``."""
    env = {
        **os.environ,
        "CONSENT_DEV": "true",
        "CONSENT_SERVICE_NAME": f"bench-consent-{run}",
        "CONSENT_LOG_LEVEL": "WARNING",
        "CONSENT_KAFKA__BOOTSTRAP_SERVERS": KAFKA,
        "CONSENT_POSTGRES__DSN": DATABASE_URL,
        "CONSENT_POSTGRES__DB_SCHEMA": db_schema,
        "CONSENT_CATALOG_EVENTS_TOPIC": catalog_topic,
    }
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "datapolis_consent", "api", "--port", str(port)], env=env
    )


async def announce(kafka: KafkaSettings, run: str, catalog_topic: str) -> tuple[str, str, str]:
    """As catalog does: keys for a publisher and a consumer, a shared dataset."""
    publisher, consumer = f"org-bench-pub-{run}", f"org-bench-con-{run}"
    keys = {org: generate_key() for org in (publisher, consumer)}
    catalog = Producer(kafka, client_id="bench-catalog")
    await catalog.start()
    try:
        for org, key in keys.items():
            await catalog.send_event(
                ApiKeyIssued(
                    key_id=key.key_id,
                    org_id=org,
                    scopes=["consent", "read"],
                    secret_hash=key.secret_hash,
                    issued_at=datetime.now(UTC),
                )
            )
        dataset_id, slug = f"ds-bench-{run}", f"bench-meters-{run}"
        registered = DatasetRegistered(
            dataset_id=dataset_id,
            slug=slug,
            publisher_id=publisher,
            access_level="shared",
            key_field_name="meter_id",
            topic_name=f"data.{slug}",
        )
        version = SchemaVersionAdded(
            dataset_id=dataset_id,
            slug=slug,
            version=1,
            major=1,
            topic_name=f"data.{slug}",
            json_schema=SCHEMA,
        )
        for event in (registered, version):
            value, headers = to_structured(event.to_cloudevent())
            await catalog.send(OutgoingRecord(catalog_topic, value, event.key().encode(), headers))
    finally:
        await catalog.stop()
    return keys[publisher].token, keys[consumer].token, dataset_id


async def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agreements", type=int, default=600, help="granted, then revoked")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers of (b), (c)")
    parser.add_argument("--rate", type=float, default=100.0, help="revocations/s of (d)")
    parser.add_argument("--latency-s", type=float, default=10.0, help="duration of (d)")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    db_schema = f"bench_consent_{run}"
    catalog_topic, baseline_topic = f"bench.catalog.{run}", f"bench.baseline.{run}"
    kafka = KafkaSettings(bootstrap_servers=KAFKA)
    await ensure_topics(
        kafka, [*control_topic_specs(), TopicSpec(catalog_topic, 1), TopicSpec(baseline_topic, 3)]
    )
    await apply(DATABASE_URL, db_schema, service_migrations("datapolis_consent"))
    timed = int(args.rate * args.latency_s)
    print(
        f"consent: {args.agreements} agreements granted then revoked by {args.clients} "
        f"callers, then {timed} revoked at {args.rate:.0f}/s; broker {KAFKA}"
    )

    rate_a, latency_a, readable_a = await baseline(
        baseline_topic, db_schema, args.clients, args.agreements, args.rate, args.latency_s
    )
    print(
        f"(a) baseline, INSERT + commit then one Kafka record acknowledged (acks=all): "
        f"{rate_a:,.0f} ops/s ({args.clients} callers); at {args.rate:.0f}/s {ms(latency_a)}; "
        f"ack to read by a tailing consumer {ms(readable_a)}"
    )

    publisher, consumer, dataset = await announce(kafka, run, catalog_topic)
    port = free_port()
    server = start_consent(port, run, db_schema, catalog_topic)
    base = f"http://127.0.0.1:{port}"
    json_type = {"Content-Type": "application/json"}
    as_publisher = {"Authorization": f"Bearer {publisher}", **json_type}
    as_consumer = {"Authorization": f"Bearer {consumer}", **json_type}
    tail = Tail(CONSENT_EVENTS, REVOKED)
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(base_url=base, connector=connector) as session:
            request = orjson.dumps(
                {
                    "dataset": dataset,
                    "project": {"name": "Heat map", "description": "street by street"},
                    "purposes": ["dpv:ScientificResearch"],
                    "fields": ["meter_id", "kwh", "address.city"],
                    "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
                }
            )

            async def ask() -> int:
                async with session.post("/agreements", data=request, headers=as_consumer) as r:
                    if r.status == 201:
                        ids.append((await r.json())["agreement_id"])
                    return r.status

            ids: list[str] = []
            deadline = time.monotonic() + 120
            while await _status(ask) != 201:  # keys and dataset learnt from catalog's events
                if time.monotonic() > deadline:
                    raise SystemExit("consent did not accept a request within 120 s")
                await asyncio.sleep(0.3)
            total = args.agreements + timed
            await closed_loop(lambda n: ask(), total - len(ids), args.clients)
            assert len(ids) >= total, f"only {len(ids)} of {total} requests recorded"

            async def decide(action: str, aid: str, body: bytes) -> int:
                url = f"/agreements/{aid}/{action}"
                async with session.post(url, data=body, headers=as_publisher) as response:
                    await response.read()
                    return response.status

            reason = orjson.dumps({"reason": "the project ended"})
            grants, statuses_b = await closed_loop(
                lambda n: decide("grant", ids[n], b"{}"), total, args.clients
            )
            print(
                f"(b) grants: {grants:,.0f}/s over {total} ({args.clients} callers, statuses "
                f"{statuses_b})"
            )
            first = ids[: args.agreements]
            cpu_before = cpu_seconds(server.pid)
            revocations, statuses_c = await closed_loop(
                lambda n: decide("revoke", first[n], reason), len(first), args.clients
            )
            cpu_per_call = (cpu_seconds(server.pid) - cpu_before) / len(first)
            print(
                f"(c) revocations: {revocations:,.0f}/s over {len(first)} ({args.clients} "
                f"callers, each answered once its event is acknowledged; statuses {statuses_c}); "
                f"{revocations / rate_a:.2f}x the baseline's ops/s; CPU of the consent process "
                f"{cpu_per_call * 1e3:.1f} ms per revocation"
            )

            await tail.start()
            rest = ids[args.agreements : total]
            latencies, answered, sent, statuses_d = await open_loop(
                lambda n: decide("revoke", rest[n], reason), len(rest), args.rate
            )
            verdict = "meets" if percentile(latencies, 0.99) * 1e3 <= MAX_P99_MS else "misses"
            print(
                f"(d) revocation answered at {args.rate:.0f}/s, {len(latencies)} calls: "
                f"{ms(latencies)} ({verdict} p99 <= {MAX_P99_MS} ms; statuses {statuses_d}); "
                f"p99 {percentile(latencies, 0.99) / percentile(latency_a, 0.99):.1f}x "
                "the baseline's"
            )
            keys = [aid.encode() for aid in rest]
            await tail.wait_for(keys)
            readable, never = lags(tail, keys, answered)
            from_call, _ = lags(tail, keys, sent)
            print(
                f"(e) revocation answered to its event read from {CONSENT_EVENTS}: "
                f"{ms(readable)} (negative: read before the answer; {never} never read); "
                f"from the call sent: {ms(from_call)}; the baseline's ack to read "
                f"{ms(readable_a)}"
            )
    finally:
        await tail.stop()
        server.send_signal(signal.SIGINT)  # uvicorn's graceful stop
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        await cleanup([catalog_topic, baseline_topic], db_schema)


async def _status(call: Callable[[], Awaitable[int]]) -> int:
    with contextlib.suppress(aiohttp.ClientError):
        return await call()
    return 0


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


if __name__ == "__main__":
    asyncio.run(main())
