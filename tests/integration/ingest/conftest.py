"""Ingest fixtures: an ingest app on the test's schema, datasets and keys
created the way catalog creates them (events on datapolis.catalog.events)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from datapolis_ingest.app import create_app
from datapolis_ingest.settings import IngestSettings
from datapolis_shared.auth import generate_key
from datapolis_shared.events.catalog import (
    ApiKeyIssued,
    DatasetRegistered,
    SchemaVersionAdded,
)
from datapolis_shared.kafka import Producer, TopicSpec, ensure_topics
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.settings import KafkaSettings, ServiceSettings
from tests.kafka_util import eventually

METER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "measured_at": {"type": "string", "format": "date-time"},
        "household": {"type": "string"},
    },
    "required": ["meter_id", "kwh", "measured_at"],
}


@pytest.fixture
async def ingest_settings(service_settings: ServiceSettings, database_url: str) -> IngestSettings:
    settings = IngestSettings(**dict(service_settings))
    await apply(database_url, settings.postgres.db_schema, service_migrations("datapolis_ingest"))
    return settings


@dataclass
class Ingest:
    app: FastAPI
    client: httpx.AsyncClient
    settings: IngestSettings

    def knows(self, slug: str, version: int | None = None) -> bool:
        registry = getattr(self.app.state, "registry", None)
        dataset = registry.get(slug) if registry is not None else None
        return dataset is not None and (version is None or dataset.schema_version == version)


IngestFactory = Callable[..., Awaitable[Ingest]]


@pytest.fixture
async def start_ingest(ingest_settings: IngestSettings) -> AsyncIterator[IngestFactory]:
    """Starts ingest apps (settings overridable); stops them after the test."""
    managers: list[tuple[LifespanManager, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Ingest:
        settings = ingest_settings.model_copy(update=overrides)
        app = create_app(settings)
        manager = LifespanManager(app, startup_timeout=30, shutdown_timeout=30)
        await manager.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://ingest", timeout=60
        )
        managers.append((manager, client))
        await app.state.runtime.connected.wait()
        return Ingest(app, client, settings)

    yield start
    for manager, client in reversed(managers):
        await client.aclose()
        await manager.__aexit__(None, None, None)


@pytest.fixture
async def ingest(start_ingest: IngestFactory) -> Ingest:
    return await start_ingest()


@dataclass
class Publisher:
    org_id: str
    token: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def issue_key(producer: Producer, org_id: str, scopes: list[str]) -> Publisher:
    key = generate_key()
    await producer.send_event(
        ApiKeyIssued(
            key_id=key.key_id,
            org_id=org_id,
            scopes=scopes,
            secret_hash=key.secret_hash,
            issued_at=datetime.now(UTC),
        )
    )
    return Publisher(org_id, key.token, key.key_id)


@pytest.fixture
async def publisher(producer: Producer) -> Publisher:
    return await issue_key(producer, f"org-{uuid.uuid4().hex[:8]}", ["ingest", "read"])


@dataclass
class TestDataset:
    dataset_id: str
    slug: str
    publisher_id: str
    data_topic: str
    raw_topic: str


DatasetFactory = Callable[..., Awaitable[TestDataset]]


@pytest.fixture
async def register_dataset(
    producer: Producer, kafka_settings: KafkaSettings
) -> AsyncIterator[DatasetFactory]:
    """Registers datasets as catalog does: topics, DatasetRegistered, SchemaVersionAdded."""
    topics: list[str] = []

    async def register(
        publisher_id: str,
        *,
        schema: dict[str, Any] | None = None,
        access_level: str = "open",
        key_field: str | None = "meter_id",
        subject_field: str | None = None,
    ) -> TestDataset:
        slug = f"meters-{uuid.uuid4().hex[:10]}"
        dataset = TestDataset(
            f"ds-{uuid.uuid4().hex[:12]}", slug, publisher_id, f"data.{slug}", f"raw.{slug}"
        )
        await ensure_topics(
            kafka_settings, [TopicSpec(dataset.data_topic, 3), TopicSpec(dataset.raw_topic, 3)]
        )
        topics.extend([dataset.data_topic, dataset.raw_topic])
        await producer.send_event(
            DatasetRegistered(
                dataset_id=dataset.dataset_id,
                slug=slug,
                publisher_id=publisher_id,
                access_level=access_level,  # type: ignore[arg-type]
                key_field_name=key_field,
                subject_field=subject_field,
                topic_name=dataset.data_topic,
            )
        )
        await producer.send_event(
            SchemaVersionAdded(
                dataset_id=dataset.dataset_id,
                slug=slug,
                version=1,
                major=1,
                topic_name=dataset.data_topic,
                json_schema=schema or METER_SCHEMA,
            )
        )
        return dataset

    yield register
    if topics:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics(topics)
        finally:
            await admin.close()


# Waits for a test's own set-up (a new consumer group joining, the catalog
# events applied), not bounds on the behaviour under test: they return as soon
# as the condition holds, and are wide because a CI machine's disk sometimes
# stalls (PostgreSQL commits once took 1.5-3 s each, and 20 s ran out).
SETUP_WAIT_S = 60


async def until_known(ingest: Ingest, slug: str, version: int | None = None) -> None:
    await eventually(lambda: ingest.knows(slug, version), timeout_s=SETUP_WAIT_S)


async def until_key_works(ingest: Ingest, who: Publisher) -> None:
    """A key is usable once the key-sync consumer stored it."""

    async def works() -> bool:
        response = await ingest.client.get("/readyz")
        assert response.status_code in (200, 503)
        keys = ingest.app.state.runtime.keys
        try:
            await keys.resolve(who.token)
        except Exception:
            return False
        return True

    await eventually(works, timeout_s=SETUP_WAIT_S)


def reading(i: int, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"r-{uuid.uuid4().hex}",
        "meter_id": f"m-{i % 7}",
        "kwh": 1.5 + i,
        "measured_at": "2025-03-01T12:00:00+00:00",
    }
    record.update(overrides)
    return record
