"""Consent fixtures: a consent app on the test's schema that learns about
datasets from a catalog events topic, and a way to put catalog's events there."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from datapolis_catalog.app import create_app as create_catalog
from datapolis_catalog.settings import CatalogSettings
from datapolis_consent.agreements import on_dataset_retired
from datapolis_consent.app import create_app
from datapolis_consent.datasets import Dataset, get_dataset
from datapolis_consent.settings import ConsentSettings
from datapolis_shared.events.base import Event
from datapolis_shared.events.catalog import AccessLevel, DatasetRegistered, SchemaVersionAdded
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.kafka import OutgoingRecord, Producer
from datapolis_shared.postgres.migrate import apply, load, service_migrations
from datapolis_shared.postgres.pool import Connection, Pool
from datapolis_shared.settings import ServiceSettings
from tests.apps import running
from tests.integration.catalog.conftest import delete_topics
from tests.kafka_util import eventually

# Waits for a test's own set-up (a consumer group joining, events applied),
# not bounds of the behaviour under test: they end as soon as it holds.
SETUP_WAIT_S = 60

METER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "household": {"type": "string"},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "postcode": {"type": "string"}},
        },
    },
    "required": ["meter_id", "kwh", "household"],
}


@dataclass
class Consent:
    app: FastAPI
    client: httpx.AsyncClient
    # What the retirement hook was called with, in order.
    retirements: list[Dataset] = field(default_factory=list)

    @property
    def pool(self) -> Pool:
        pool: Pool = self.app.state.runtime.pool
        return pool

    async def dataset(self, dataset_id_or_slug: str) -> Dataset:
        async with self.pool.acquire() as conn:
            return await get_dataset(conn, dataset_id_or_slug)

    async def knows(self, dataset_id: str, *, version: int | None = None) -> bool:
        row = await self.pool.fetchrow(
            "SELECT schema_version FROM datasets WHERE dataset_id = $1", dataset_id
        )
        return row is not None and (version is None or row["schema_version"] == version)

    async def until_known(self, dataset_id: str, *, version: int | None = None) -> None:
        await eventually(lambda: self.knows(dataset_id, version=version), timeout_s=SETUP_WAIT_S)


ConsentFactory = Callable[..., Awaitable[Consent]]


@pytest.fixture
async def start_consent(
    service_settings: ServiceSettings,
) -> AsyncIterator[ConsentFactory]:
    """Starts a consent app reading catalog's events from ``topic``, with a
    retirement hook that records its calls."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(topic: str, *, migrate: bool = True, **overrides: Any) -> Consent:
            """``migrate=False``: only the shared tables, as before consent's
            migration ran; ``overrides``: settings of the test's own."""
            settings = ConsentSettings(
                **{**dict(service_settings), "catalog_events_topic": topic, **overrides}
            )
            retirements: list[Dataset] = []

            async def on_retired(conn: Connection, dataset: Dataset) -> None:
                # In the transaction that records the retirement.
                assert conn.is_in_transaction()
                retirements.append(dataset)
                # What the service does with a retirement: its agreements end.
                await on_dataset_retired(conn, dataset)

            app = create_app(settings, on_retired=on_retired)
            migrations = service_migrations("datapolis_consent") if migrate else None
            client = await stack.enter_async_context(running(app, migrations=migrations))
            return Consent(app, client, retirements)

        yield start


@dataclass
class CatalogTopic:
    """A topic of the test's own, written as catalog writes its events."""

    name: str
    producer: Producer

    async def send(self, event: Event, *, id: str | None = None) -> str:
        """Put ``event`` on the topic (``id``: its CloudEvents id, to send
        the same event again); returns the id."""
        envelope = event.to_cloudevent(id=id)
        value, headers = to_structured(envelope)
        await self.producer.send(OutgoingRecord(self.name, value, event.key().encode(), headers))
        return envelope.id

    async def send_raw(self, value: bytes, key: bytes = b"junk") -> None:
        await self.producer.send(OutgoingRecord(self.name, value, key, []))

    async def register(
        self,
        *,
        access_level: AccessLevel = "shared",
        subject_field: str | None = None,
        schema: dict[str, Any] | None = None,
        publisher_id: str = "org-publisher",
    ) -> DatasetRegistered:
        """A dataset and its first schema version, as catalog announces them."""
        slug = f"meters-{uuid.uuid4().hex[:10]}"
        registered = DatasetRegistered(
            dataset_id=f"ds-{uuid.uuid4().hex[:12]}",
            slug=slug,
            publisher_id=publisher_id,
            access_level=access_level,
            key_field_name="meter_id",
            subject_field=subject_field,
            topic_name=f"data.{slug}",
        )
        await self.send(registered)
        await self.send(
            SchemaVersionAdded(
                dataset_id=registered.dataset_id,
                slug=slug,
                version=1,
                major=1,
                topic_name=registered.topic_name,
                json_schema=schema or METER_SCHEMA,
            )
        )
        return registered


@pytest.fixture
async def catalog_topic(
    new_topic: Callable[..., Awaitable[str]], producer: Producer
) -> CatalogTopic:
    # One partition: the tests rely on the order of events of several datasets.
    return CatalogTopic(await new_topic("catalog-events", partitions=1), producer)


@pytest.fixture
async def catalog(
    service_settings: ServiceSettings, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A catalog app on a PostgreSQL schema of its own (its tables have the
    same names as consent's), publishing to the shared datapolis.catalog.events."""
    db_schema = f"c_{uuid.uuid4().hex[:12]}"
    await apply(database_url, db_schema, load("datapolis_shared.postgres", prefix="shared"))
    settings = CatalogSettings(
        **{
            **dict(service_settings),
            "service_name": f"cat{uuid.uuid4().hex[:6]}",
            "postgres": service_settings.postgres.model_copy(update={"db_schema": db_schema}),
        }
    )
    app = create_catalog(settings)
    topics: list[str] = []
    try:
        async with running(app, migrations=service_migrations("datapolis_catalog")) as client:
            yield client
            topics.extend(
                r["topic_name"]
                for r in await app.state.runtime.pool.fetch("SELECT topic_name FROM dataset_topics")
            )
    finally:
        await delete_topics(settings.kafka.bootstrap_servers, topics)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA "{db_schema}" CASCADE')
        finally:
            await conn.close()
