"""Partner notification fixtures: the real consent service in-process, the
real notify worker (entitlement projection, notifications consumer, delivery
engine) and notify's API on notify's own schema, and a webhook receiver on
127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import standardwebhooks
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata

from datapolis_notify.app import create_app
from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.notifications import CONSUMER
from datapolis_notify.settings import DeliverySettings, NotifySettings
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.worker import serve
from datapolis_shared.auth import generate_key, save_key
from datapolis_shared.postgres.migrate import service_migrations
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import ServiceSettings, WorkerHttpSettings
from tests.apps import running

# The consent, catalog-topic, notify-schema and receiver fixtures.
from tests.integration.consent.conftest import (  # noqa: F401
    CatalogTopic,
    catalog_topic,
    start_consent,
)
from tests.integration.notify.delivery.conftest import Hit, Receiver, receiver  # noqa: F401
from tests.integration.notify.delivery.test_crash import free_port
from tests.integration.notify.entitlements.conftest import (  # noqa: F401
    notify_pool,
    notify_schema,
)
from tests.kafka_util import TopicTail, eventually

# Waits for a test's own set-up and for the notifications to arrive, not
# bounds of the behaviour under test.
WAIT_S = 60


@dataclass
class NotifyUnderTest:
    api: httpx.AsyncClient
    pool: Pool
    receiver: Receiver
    catalog: CatalogTopic

    async def headers_for(self, org_id: str) -> dict[str, str]:
        """A key of ``org_id`` that notify's API accepts (saved as its key
        sync would save it)."""
        key = generate_key()
        await save_key(
            self.pool, key_id=key.key_id, org_id=org_id, scopes=["read", "subscribe"],
            secret_hash=key.secret_hash,
        )  # fmt: skip
        return {"Authorization": f"Bearer {key.token}"}

    async def subscribe(self, org_id: str, path: str, **body: Any) -> dict[str, Any]:
        """A webhook subscription of ``org_id`` to ``receiver/<path>``."""
        response = await self.api.post(
            "/subscriptions",
            json={"channel": "webhook", "url": self.receiver.url(path), **body},
            headers=await self.headers_for(org_id),
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def until_known(self, dataset_id: str, *, version: int | None = None) -> None:
        async def known() -> bool:
            row = await self.pool.fetchrow(
                "SELECT schema_version FROM datasets WHERE dataset_id = $1", dataset_id
            )
            return row is not None and (version is None or row["schema_version"] == version)

        await eventually(known, timeout_s=WAIT_S)

    async def notifications(
        self, path: str, secret: str, expect: int, *, event_type: str | None = None
    ) -> list[dict[str, Any]]:
        """The first ``expect`` notifications received on ``path`` (of
        ``event_type``), each signature verified with the Standard Webhooks
        reference verifier."""
        wanted: list[Hit] = []

        def arrived() -> bool:
            wanted[:] = [
                hit
                for hit in self.receiver.on(path)
                if event_type is None or hit.body.get("type") == event_type
            ]
            return len(wanted) >= expect

        await eventually(arrived, timeout_s=WAIT_S)
        verifier = standardwebhooks.Webhook(secret)
        events = []
        for hit in wanted:
            verifier.verify(hit.raw, hit.headers)
            assert hit.body["id"] == hit.message_id
            events.append(hit.body)
        return events


async def skip_history(bootstrap: str, topic: str, group_ids: list[str]) -> None:
    """Start ``group_ids`` at the current end of the shared ``topic``: a
    notify deployed now, rather than one reading through what every earlier
    test left on a long-lived broker (a backlog of thousands of events)."""
    ends = (await TopicTail.at_end(bootstrap, topic))._start
    for group_id in group_ids:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(list(ends))
            await consumer.commit({tp: OffsetAndMetadata(end, "") for tp, end in ends.items()})
        finally:
            await consumer.stop()


@pytest.fixture
async def notify_under_test(
    service_settings: ServiceSettings,
    notify_schema: str,  # noqa: F811
    notify_pool: Pool,  # noqa: F811
    catalog_topic: CatalogTopic,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> AsyncIterator[NotifyUnderTest]:
    settings = NotifySettings(
        **{
            **dict(service_settings),
            "service_name": f"notify{uuid.uuid4().hex[:6]}",
            "postgres": service_settings.postgres.model_copy(update={"db_schema": notify_schema}),
            "entitlements": EntitlementSettings(catalog_events_topic=catalog_topic.name),
            "webhooks": WebhookSettings(allow_targets=["127.0.0.0/8"]),
            "delivery": DeliverySettings(
                # No dataset topic: only notifications are under test.
                topic_pattern=rf"^data\.none-{uuid.uuid4().hex}$",
                group_id=f"notify.delivery.{uuid.uuid4().hex[:8]}",
                retry_schedule_s=[0.2, 0.2, 0.2],
                retry_jitter=0.0,
                queue_poll_s=0.05,
                subscription_refresh_s=0.2,
            ),
            "worker_http": WorkerHttpSettings(host="127.0.0.1", port=free_port()),
        }
    )
    await skip_history(
        settings.kafka.bootstrap_servers,
        settings.entitlements.consent_events_topic,
        [f"datapolis-{settings.service_name}-{name}" for name in ("entitlements", CONSUMER)],
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(settings, stop))
    try:
        async with running(
            create_app(settings), migrations=service_migrations("datapolis_notify")
        ) as api:
            yield NotifyUnderTest(api, notify_pool, receiver, catalog_topic)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 30)
