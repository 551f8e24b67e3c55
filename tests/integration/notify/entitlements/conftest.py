"""Notify's entitlement fixtures: notify's tables in a schema of their own
(their names are consent's too), the projection run as the worker runs it,
and feeds started by the test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from datapolis_notify.entitlements.feed import EntitlementFeed, start_entitlements
from datapolis_notify.entitlements.projection import CONSUMER, start_entitlement_projection
from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.entitlements.view import Entitlements
from datapolis_notify.settings import NotifySettings
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import KafkaSettings, ServiceSettings

# The consent fixtures, for a real consent service in-process.
from tests.integration.consent.conftest import (  # noqa: F401
    catalog_topic,
    start_consent,
)
from tests.kafka_util import eventually, skip_history, topic_ends

# Waits for a test's own set-up, not bounds of the behaviour under test.
SETUP_WAIT_S = 60


@pytest.fixture
async def notify_schema(database_url: str) -> AsyncIterator[str]:
    name = f"n_{uuid.uuid4().hex[:12]}"
    await apply(database_url, name, service_migrations("datapolis_notify"))
    yield name
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def notify_pool(database_url: str, notify_schema: str) -> AsyncIterator[Pool]:
    pg = await asyncpg.create_pool(
        database_url, min_size=1, max_size=5, server_settings={"search_path": notify_schema}
    )
    yield pg
    await pg.close()


@dataclass
class Notify:
    settings: NotifySettings
    runtime: Runtime
    # The worker's own view, fed as every notify process feeds it.
    feed: EntitlementFeed


NotifyFactory = Callable[..., Awaitable[Notify]]


@pytest.fixture
async def start_notify_projection(
    service_settings: ServiceSettings, notify_schema: str
) -> AsyncIterator[NotifyFactory]:
    """Runs the projection as the notify worker does, on notify's schema,
    reading catalog's events from ``catalog_topic``."""
    runtimes: list[Runtime] = []
    feeds: list[EntitlementFeed] = []
    consent_ends = await topic_ends(
        service_settings.kafka.bootstrap_servers, EntitlementSettings().consent_events_topic
    )

    async def start(catalog_events_topic: str, **overrides: Any) -> Notify:
        settings = NotifySettings(
            **{
                **dict(service_settings),
                "service_name": f"notify{uuid.uuid4().hex[:6]}",
                "postgres": service_settings.postgres.model_copy(
                    update={"db_schema": notify_schema}
                ),
                "entitlements": EntitlementSettings(catalog_events_topic=catalog_events_topic),
                **overrides,
            }
        )
        # Its projection's group starts where the shared consent topic ended
        # when the test began: the test's own events, not every earlier
        # test's (thousands on a long-lived broker, minutes to apply).
        await skip_history(
            settings.kafka.bootstrap_servers,
            settings.entitlements.consent_events_topic,
            [f"datapolis-{settings.service_name}-{CONSUMER}"],
            ends=consent_ends,
        )
        runtime = Runtime(settings=settings, metrics=ServiceMetrics(settings.service_name))

        async def on_connected(runtime: Runtime) -> None:
            start_entitlement_projection(runtime, settings.entitlements)
            feeds.append(await start_entitlements(runtime, settings.entitlements))

        runtimes.append(runtime)
        await runtime.start(on_connected, sync_keys=False, relay=False)
        await eventually(runtime.connected.is_set, timeout_s=SETUP_WAIT_S)
        return Notify(settings, runtime, feeds[-1])

    yield start
    for feed in feeds:
        await feed.stop()
    for runtime in runtimes:
        await runtime.stop()


FeedFactory = Callable[..., Awaitable[EntitlementFeed]]


@pytest.fixture
async def start_feed() -> AsyncIterator[FeedFactory]:
    """Starts feeds (each with a view of its own) and stops them after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            kafka: KafkaSettings,
            settings: EntitlementSettings,
            *,
            pool: Pool | None = None,
            metrics: ServiceMetrics | None = None,
        ) -> EntitlementFeed:
            view = Entitlements(staleness_s=settings.staleness_s)
            feed = EntitlementFeed(view, kafka, settings, pool=pool, metrics=metrics)
            await feed.start()
            stack.push_async_callback(feed.stop)
            return feed

        yield start
