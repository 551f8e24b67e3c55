"""Server-sent events benchmark: prints figures, it is not a timed test.

    uv run python bench/sse.py [--rate 1000] [--seconds 30]

Needs the local Kafka and PostgreSQL (``make infra``). Serves the notify API
on 127.0.0.1 with its own entitlement view, registers an open dataset on a
catalog events topic of its own, opens one stream of an ``sse``
subscription, and writes ``--rate`` records a second to the dataset's topic
for ``--seconds``. Prints the latency from the start of each record's write
(before Kafka's acknowledgement, as an ingest 2xx would be) to its arrival
at the stream's client, p50, p99, p99.9 and max, and records lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid

import asyncpg
import httpx
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI

from datapolis_notify.app import create_app
from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.settings import NotifySettings
from datapolis_shared.events.catalog import DatasetRegistered
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.kafka import OutgoingRecord, Producer, TopicSpec, ensure_topics
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.settings import DEV_OPERATOR_KEY, KafkaSettings

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
DATABASE = os.environ.get(
    "DATABASE_URL", "postgresql://datapolis:datapolis@127.0.0.1:55432/datapolis"
)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _read(response: httpx.Response, arrivals: dict[int, float], expected: int) -> None:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            record = json.loads(line[6:])["data"]
            arrivals[record["n"]] = time.perf_counter() - record["t"]
            if len(arrivals) >= expected:
                return


async def _write(
    producer: Producer, topic: str, rate: int, seconds: float, starts: dict[int, float]
) -> None:
    tick_s, per_tick = 0.01, max(1, rate // 100)
    n, began = 0, time.perf_counter()
    pending: set[asyncio.Task[object]] = set()
    while time.perf_counter() - began < seconds:
        batch = []
        for _ in range(per_tick):
            starts[n] = time.perf_counter()
            value = {"n": n, "t": starts[n], "meter_id": f"m-{n % 97}", "kwh": 1.0}
            batch.append(OutgoingRecord(topic, json.dumps(value).encode(), f"m-{n % 97}".encode()))
            n += 1
        task = asyncio.ensure_future(producer.send_many(batch))
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(max(0.0, began + (n // per_tick) * tick_s - time.perf_counter()))
    await asyncio.gather(*pending)


async def _until_known(app: FastAPI, dataset_id: str) -> None:
    """Until the API's view has read the dataset from the catalog topic."""
    for _ in range(600):
        view = getattr(app.state, "entitlements", None)
        if view is not None and view.dataset(dataset_id) is not None:
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the API did not learn the dataset within a minute")


async def _report(
    args: argparse.Namespace, starts: dict[int, float], arrivals: dict[int, float]
) -> None:
    latencies_ms = [v * 1000 for v in arrivals.values()]
    print(
        f"sse: {len(starts)} records at {args.rate}/s for {args.seconds:.0f} s, "
        f"{len(starts) - len(arrivals)} lost; latency write start -> client (ms): "
        f"p50 {statistics.median(latencies_ms):.1f}, "
        f"p99 {_percentile(latencies_ms, 0.99):.1f}, "
        f"p99.9 {_percentile(latencies_ms, 0.999):.1f}, max {max(latencies_ms):.1f}"
    )


async def _clean_up(schema: str, topics: list[str]) -> None:
    conn = await asyncpg.connect(DATABASE)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    schema, catalog_topic, data_topic = (
        f"bench_sse_{run}",
        f"bench.catalog.{run}",
        f"data.bench-{run}",
    )
    kafka = KafkaSettings(bootstrap_servers=KAFKA)
    await ensure_topics(kafka, [TopicSpec(catalog_topic, 1), TopicSpec(data_topic, 3)])
    await apply(DATABASE, schema, service_migrations("datapolis_notify"))
    settings = NotifySettings(
        dev=True,
        service_name=f"benchsse{run}",
        log_level="WARNING",
        kafka=kafka,
        postgres={"dsn": DATABASE, "db_schema": schema},
        entitlements=EntitlementSettings(catalog_events_topic=catalog_topic),
    )
    producer = Producer(kafka, client_id="bench-sse")
    await producer.start()
    app = create_app(settings)
    port = 18000 + int(run[:4], 16) % 1000
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        dataset = DatasetRegistered(
            dataset_id=f"ds-{run}",
            slug=f"bench-{run}",
            publisher_id="bench-publisher",
            access_level="open",
            key_field_name="meter_id",
            topic_name=data_topic,
        )
        value, headers = to_structured(dataset.to_cloudevent())
        await producer.send(OutgoingRecord(catalog_topic, value, dataset.key().encode(), headers))
        await _until_known(app, dataset.dataset_id)
        subscription = f"sub-{run}"
        await app.state.runtime.pool.execute(
            "INSERT INTO subscriptions (subscription_id, consumer_id, dataset_id, channel)"
            " VALUES ($1, 'bench-consumer', $2, 'sse')",
            subscription,
            dataset.dataset_id,
        )
        starts: dict[int, float] = {}
        arrivals: dict[int, float] = {}
        expected = int(args.rate * args.seconds)
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream(
                "GET",
                f"http://127.0.0.1:{port}/subscriptions/{subscription}/events",
                headers={"Authorization": f"Bearer {DEV_OPERATOR_KEY}"},
            ) as response,
        ):
            assert response.status_code == 200, await response.aread()
            reader = asyncio.create_task(_read(response, arrivals, expected))
            await _write(producer, data_topic, args.rate, args.seconds, starts)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 10)
        await _report(args, starts, arrivals)
    finally:
        server.should_exit = True
        await serving
        await producer.stop()
        await _clean_up(schema, [catalog_topic, data_topic])


if __name__ == "__main__":
    asyncio.run(main())
