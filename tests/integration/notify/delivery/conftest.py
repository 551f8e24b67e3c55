"""Delivery fixtures: notify's tables in the test's schema, a dataset topic
of the test's own, a real HTTP receiver on 127.0.0.1, and an engine reading
that topic with the real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from datapolis_notify.delivery.channels import Channels, KafkaChannel, WebhookChannel
from datapolis_notify.delivery.consumer import DatasetReader
from datapolis_notify.delivery.engine import DeliveryEngine
from datapolis_notify.delivery.metrics import DeliveryMetrics
from datapolis_notify.settings import DeliverySettings
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.webhooks.sender import HttpWebhookSender
from datapolis_shared.kafka import OutgoingRecord, Producer, TopicSpec, ensure_topics
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import KafkaSettings
from tests.integration.catalog.conftest import delete_topics
from tests.integration.notify.delivery.standins import StandInView
from tests.kafka_util import eventually

SETUP_WAIT_S = 30
# Every test subscription's v1 signing secret.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def notify_pool(pool: Pool, database_url: str, schema: str) -> Pool:
    await apply(database_url, schema, service_migrations("datapolis_notify"))
    return pool


@dataclass
class Hit:
    path: str
    message_id: str
    body: Any
    at: float
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    """A webhook target: answers each path as told (a list of statuses, used
    in turn, the last one kept; ``hang`` never answers)."""

    base_url: str
    hits: list[Hit] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    delay_s: dict[str, float] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def records(self, path: str, *, delivered_only: bool = True) -> list[dict[str, Any]]:
        return [event for hit in self.on(path) for event in hit.body]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(base_url="")

    async def handle(request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        if path in state.hang:
            await asyncio.sleep(3600)
        if path in state.delay_s:
            await asyncio.sleep(state.delay_s[path])
        count = state.seen.get(path, 0)
        state.seen[path] = count + 1
        answers = state.answers.get(path, [200])
        status = answers[min(count, len(answers) - 1)]
        if 200 <= status < 300:
            state.hits.append(
                Hit(
                    path,
                    request.headers.get("webhook-id", ""),
                    json.loads(body),
                    asyncio.get_running_loop().time(),
                    body,
                    dict(request.headers),
                )
            )
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/{path}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.base_url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


@dataclass
class Scene:
    pool: Pool
    topic: str
    dataset_id: str
    view: StandInView
    producer: Producer
    kafka: KafkaSettings

    async def subscribe(
        self,
        *,
        channel: str = "webhook",
        url: str | None = None,
        consumer_id: str = "org-consumer",
        fields: list[str] | None = None,
        filter_: dict[str, Any] | None = None,
        batch_max_records: int = 100,
        batch_linger_ms: int = 5,
        purpose: str | None = None,
        notifications: list[str] | None = None,
        dataset: bool = True,
    ) -> str:
        subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
        await self.pool.execute(
            "INSERT INTO subscriptions (subscription_id, consumer_id, dataset_id, channel, url, "
            "purpose, fields, filter, notifications, batch_max_records, batch_linger_ms) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11)",
            subscription_id,
            consumer_id,
            self.dataset_id if dataset else None,
            channel,
            url,
            purpose,
            fields,
            json.dumps(filter_ or {}),
            notifications or [],
            batch_max_records,
            batch_linger_ms,
        )
        await self.pool.execute(
            "INSERT INTO subscription_secrets (subscription_id, secret_id, scheme, secret) "
            "VALUES ($1, 'key_1', 'v1', $2)",
            subscription_id,
            SECRET,
        )
        return subscription_id

    async def produce(self, records: list[tuple[str | None, dict[str, Any]]]) -> None:
        await self.producer.send_many(
            [
                OutgoingRecord(
                    topic=self.topic,
                    key=None if key is None else key.encode(),
                    value=json.dumps(value).encode(),
                    headers=[
                        ("ce_id", f"evt-{uuid.uuid4().hex[:10]}".encode()),
                        ("ce_source", b"/datapolis/ingest"),
                        ("ce_type", b"org.datapolis.test.record.v1"),
                    ],
                )
                for key, value in records
            ]
        )

    async def delivery(self, subscription_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM deliveries WHERE subscription_id = $1 ORDER BY created_at",
            subscription_id,
        )
        return [dict(r) for r in rows]

    async def queue(self, subscription_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM delivery_queue WHERE subscription_id = $1 ORDER BY seq",
            subscription_id,
        )
        return [dict(r) for r in rows]


@pytest.fixture
async def scene(
    notify_pool: Pool, kafka_settings: KafkaSettings, producer: Producer
) -> AsyncIterator[Scene]:
    topic = f"data.t{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_settings, [TopicSpec(topic, 3)])
    dataset_id = f"ds_{uuid.uuid4().hex[:10]}"
    view = StandInView()
    view.add_dataset(dataset_id, topic, access_level="shared", subject_field="household")
    await notify_pool.execute(
        "INSERT INTO datasets (dataset_id, slug, publisher_id, access_level, topic_name, "
        "subject_field) VALUES ($1, $1, 'org-publisher', 'shared', $2, 'household')",
        dataset_id,
        topic,
    )
    yield Scene(notify_pool, topic, dataset_id, view, producer, kafka_settings)
    await delete_topics(kafka_settings.bootstrap_servers, [topic])


EngineFactory = Callable[..., Awaitable[DeliveryEngine]]


def local_sender(timeout_s: float = 15.0) -> HttpWebhookSender:
    """notify's own sender, opened to the receivers on 127.0.0.1."""
    return HttpWebhookSender(WebhookSettings(allow_targets=["127.0.0.0/8"], timeout_s=timeout_s))


def delivery_settings(scene: Scene, **overrides: Any) -> dict[str, Any]:
    """Short waits for tests, reading only the scene's topic."""
    return {
        "topic_pattern": "^" + scene.topic.replace(".", r"\.") + "$",
        "group_id": f"notify.delivery.{uuid.uuid4().hex[:8]}",
        "retry_schedule_s": [0.2, 0.2, 0.2, 0.2, 0.2],
        "retry_jitter": 0.0,
        "queue_poll_s": 0.05,
        "subscription_refresh_s": 0.2,
        "commit_interval_s": 0.1,
        **overrides,
    }


@pytest.fixture
async def engine_for(scene: Scene) -> AsyncIterator[EngineFactory]:
    """Starts an engine (and its reader) on the scene's topic."""
    started: list[tuple[DeliveryEngine, DatasetReader]] = []
    senders: list[HttpWebhookSender] = []

    async def start(*, sender_timeout_s: float = 15.0, **overrides: Any) -> DeliveryEngine:
        settings = DeliverySettings(**delivery_settings(scene, **overrides))
        reader_box: list[DatasetReader] = []
        sender = local_sender(sender_timeout_s)
        senders.append(sender)

        async def partitions(topic: str) -> int | None:
            return await reader_box[0].partitions(topic)

        engine = DeliveryEngine(
            pool=scene.pool,
            view=scene.view,
            channels=Channels(
                WebhookChannel(sender),
                KafkaChannel(scene.producer, scene.kafka, partitions),
            ),
            settings=settings,
            metrics=DeliveryMetrics(CollectorRegistry()),
            connections_per_host=WebhookSettings().max_connections_per_host,
        )
        reader = DatasetReader(scene.kafka, settings, engine)
        reader_box.append(reader)
        await engine.start()
        reader.start()
        started.append((engine, reader))
        await eventually(lambda: reader.problem() is None, timeout_s=SETUP_WAIT_S)
        return engine

    yield start
    for engine, reader in started:
        await reader.stop()
        await engine.stop()
    for sender in senders:
        await sender.aclose()


async def until_picked_up(engine: DeliveryEngine, subscription_id: str) -> None:
    await eventually(lambda: subscription_id in engine.outlets, timeout_s=SETUP_WAIT_S)


def now_ms() -> int:
    return int(datetime.now().timestamp() * 1000)
