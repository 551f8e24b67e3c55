"""Delivery fan-out benchmark: records/s the notify delivery engine delivers
by webhook to N subscriptions. Prints figures; it is not a timed test.

    uv run python bench/notify_fanout.py [--subscriptions 100] [--records 2000]

One engine in this process (as the worker runs it: reader, outlets, queue,
delivery log in batches) on a PostgreSQL schema and a data topic of its own,
on the broker and database of KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL
(defaults: the local stack); the receiver is one aiohttp server on
127.0.0.1 with a path per subscription, answering 204, and the sender is
notify's own (signing with each subscription's v1 key). The dataset is open,
so the view answers from memory at no cost worth measuring. It produces the
records first, then starts the engine, and times from the first receipt to
the last: deliveries/s counts records received (records x subscriptions)
and messages/s the webhook requests. Everything it creates is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import datetime

import asyncpg
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient

from datapolis_notify.delivery.channels import Channels, WebhookChannel
from datapolis_notify.delivery.consumer import DatasetReader
from datapolis_notify.delivery.engine import DeliveryEngine
from datapolis_notify.delivery.metrics import DeliveryMetrics
from datapolis_notify.ports import (
    DatasetView,
    Decision,
    Entitled,
)
from datapolis_notify.settings import DeliverySettings
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.webhooks.sender import HttpWebhookSender
from datapolis_shared.kafka import OutgoingRecord, Producer, TopicSpec, ensure_topics
from datapolis_shared.postgres.migrate import apply, load, service_migrations
from datapolis_shared.settings import KafkaSettings

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql://datapolis:datapolis@127.0.0.1:55432/datapolis"
)


class OpenView:
    def __init__(self, dataset: DatasetView) -> None:
        self._dataset = dataset

    def dataset(self, dataset_id: str) -> DatasetView | None:
        return self._dataset if dataset_id == self._dataset.dataset_id else None

    def dataset_for_topic(self, topic: str) -> DatasetView | None:
        return self._dataset if topic == self._dataset.topic_name else None

    def decide(
        self,
        *,
        dataset_id: str,
        consumer_id: str,
        purpose: str | None,
        subject_id: str | None,
        now: datetime,
    ) -> Decision:
        return Entitled(None, None, None)

    def is_current(self) -> bool:
        return True


async def run(subscriptions: int, records: int, batch: int) -> None:  # noqa: PLR0915 - a script
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    topic = f"data.bench{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=KAFKA)
    await apply(DATABASE_URL, schema, load("datapolis_shared.postgres", prefix="shared"))
    await apply(DATABASE_URL, schema, service_migrations("datapolis_notify"))
    await ensure_topics(kafka, [TopicSpec(topic, 3)])
    pool = await asyncpg.create_pool(
        DATABASE_URL, min_size=2, max_size=10, server_settings={"search_path": schema}
    )
    received = 0
    messages = 0
    first: float | None = None
    last = 0.0
    expected = records * subscriptions
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        nonlocal received, messages, first, last
        body = json.loads(await request.read())
        now = time.perf_counter()
        first = first or now
        last = now
        received += len(body)
        messages += 1
        if received >= expected:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{path}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    dataset = DatasetView("ds-bench", "bench", "org-p", "open", topic, None, None, None, False)
    producer = Producer(kafka, client_id="bench-notify")
    await producer.start()
    engine: DeliveryEngine | None = None
    reader: DatasetReader | None = None
    sender = HttpWebhookSender(
        WebhookSettings(allow_targets=["127.0.0.0/8"], max_connections_per_host=1000)
    )
    try:
        await pool.execute(
            "INSERT INTO datasets (dataset_id, slug, publisher_id, access_level, topic_name) "
            "VALUES ('ds-bench', 'bench', 'org-p', 'open', $1)",
            topic,
        )
        for i in range(subscriptions):
            await pool.execute(
                "INSERT INTO subscriptions (subscription_id, consumer_id, dataset_id, channel, "
                "url, batch_max_records, batch_linger_ms, created_at) VALUES "
                "($1, 'org-c', 'ds-bench', 'webhook', $2, $3, 20, now() - interval '1 hour')",
                f"sub_{i}",
                f"http://127.0.0.1:{port}/s{i}",
                batch,
            )
            await pool.execute(
                "INSERT INTO subscription_secrets (subscription_id, secret_id, scheme, secret) "
                "VALUES ($1, 'key_1', 'v1', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')",
                f"sub_{i}",
            )
        for start in range(0, records, 500):
            await producer.send_many(
                [
                    OutgoingRecord(topic, json.dumps({"n": n}).encode(), key=f"k{n % 50}".encode())
                    for n in range(start, min(records, start + 500))
                ]
            )
        settings = DeliverySettings(
            topic_pattern="^" + topic.replace(".", r"\.") + "$",
            group_id=f"bench-{uuid.uuid4().hex[:6]}",
        )
        engine = DeliveryEngine(
            pool=pool,
            view=OpenView(dataset),
            channels=Channels(
                WebhookChannel(sender),
                None,
            ),
            settings=settings,
            metrics=DeliveryMetrics(registry=None),
        )
        reader = DatasetReader(kafka, settings, engine)
        await engine.start()
        reader.start()
        try:
            await asyncio.wait_for(done.wait(), timeout=600)
        except TimeoutError:
            print(f"only {received} of {expected} deliveries within 600 s")
        elapsed = last - (first or last)
        failed = await pool.fetch(
            "SELECT last_error, count(*) AS n FROM deliveries WHERE attempts > 1 "
            "OR status <> 'delivered' GROUP BY last_error ORDER BY n DESC LIMIT 3"
        )
        for row in failed:
            print(f"  {row['n']} messages needed a retry: {row['last_error']}")
        print(
            f"{subscriptions} webhook subscriptions, {records} records, batches of <= {batch}: "
            f"{received} deliveries in {elapsed:.2f}s = {received / max(elapsed, 1e-9):,.0f} "
            f"deliveries/s, {messages / max(elapsed, 1e-9):,.0f} messages/s"
        )
    finally:
        if reader is not None:
            await reader.stop()
        if engine is not None:
            await engine.stop()
        await producer.stop()
        await sender.aclose()
        await runner.cleanup()
        await pool.close()
        conn = await asyncpg.connect(DATABASE_URL)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="batch_max_records")
    args = parser.parse_args()
    asyncio.run(run(args.subscriptions, args.records, args.batch))


if __name__ == "__main__":
    main()
