"""Catalog fixtures: a catalog app on the test's schema, organisations and keys
made through its API, and a reader of datapolis.catalog.events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from fastapi import FastAPI

from datapolis_catalog.api.deps import Catalog
from datapolis_catalog.app import create_app
from datapolis_catalog.settings import CatalogSettings
from datapolis_shared.events import CATALOG_EVENTS
from datapolis_shared.events.cloudevents import CloudEvent, from_structured
from datapolis_shared.postgres.migrate import service_migrations
from datapolis_shared.settings import DEV_OPERATOR_KEY, ServiceSettings
from tests.apps import running

OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}

METER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "status": {"type": "string", "enum": ["measured", "estimated"]},
        "measured_at": {"type": "string", "format": "date-time"},
        "household": {"type": "string"},
    },
    "required": ["meter_id", "kwh", "measured_at"],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique_slug(prefix: str = "ds") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


@pytest.fixture
def catalog_settings(service_settings: ServiceSettings) -> CatalogSettings:
    return CatalogSettings(**dict(service_settings))


@dataclass
class Org:
    org_id: str
    name: str
    admin: dict[str, str]  # headers with an admin key of the org
    publisher: dict[str, str]  # headers with a publish + read key


@dataclass
class CatalogApp:
    app: FastAPI
    client: httpx.AsyncClient
    settings: CatalogSettings
    slugs: list[str] = field(default_factory=list)

    @property
    def state(self) -> Catalog:
        catalog: Catalog = self.app.state.catalog
        return catalog

    async def organisation(self, name: str | None = None, kind: str = "company") -> Org:
        name = name or f"Org {uuid.uuid4().hex[:8]}"
        created = await self.client.post(
            "/organisations",
            json={"name": name, "kind": kind, "contact_email": "data@example.org"},
            headers=OPERATOR,
        )
        assert created.status_code == 201, created.text
        org_id = created.json()["org_id"]
        admin = await self.key(org_id, ["admin", "publish", "read"], headers=OPERATOR)
        publisher = await self.key(org_id, ["publish", "read"], headers=bearer(admin))
        return Org(org_id, name, bearer(admin), bearer(publisher))

    async def key(self, org_id: str, scopes: list[str], *, headers: dict[str, str]) -> str:
        issued = await self.client.post(
            f"/organisations/{org_id}/keys", json={"scopes": scopes}, headers=headers
        )
        assert issued.status_code == 201, issued.text
        token: str = issued.json()["token"]
        return token

    async def dataset(self, org: Org, **fields: Any) -> dict[str, Any]:
        body = {
            "slug": unique_slug(),
            "title": "Consommation électrique des ménages",
            "description": "Relevés horaires des compteurs communicants.",
            "theme": "energy",
            "keywords": ["compteurs"],
            "licence": "odbl-1.0",
            "access_level": "open",
            "key_field": "meter_id",
            "update_frequency": "hourly",
            "spatial_coverage": "Métropole de Lyon",
            "retention_days": 7,
            "partitions": 2,
            "json_schema": METER_SCHEMA,
            **fields,
        }
        self.slugs.append(body["slug"])
        created = await self.client.post("/datasets", json=body, headers=org.publisher)
        assert created.status_code == 201, created.text
        dataset: dict[str, Any] = created.json()
        return dataset


@pytest.fixture
async def catalog(catalog_settings: CatalogSettings) -> AsyncIterator[CatalogApp]:
    app = create_app(catalog_settings)
    async with running(app, migrations=service_migrations("datapolis_catalog")) as client:
        subject = CatalogApp(app, client, catalog_settings)
        try:
            yield subject
        finally:
            topics = [
                r["topic_name"]
                for r in await app.state.runtime.pool.fetch("SELECT topic_name FROM dataset_topics")
            ]
    await delete_topics(catalog_settings.kafka.bootstrap_servers, topics)


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def describe_topics(bootstrap: str, topics: list[str]) -> dict[str, dict[str, Any]]:
    """Partitions and retention.ms of those of ``topics`` that exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t in existing]
        if not wanted:
            return {}
        result: dict[str, dict[str, Any]] = {}
        for described in await admin.describe_topics(wanted):
            result[described["topic"]] = {"partitions": len(described["partitions"])}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in wanted]
        )
        for response in responses:
            for resource in response.resources:
                name, entries = resource[3], resource[4]
                for entry in entries:
                    if entry[0] == "retention.ms":
                        result[name]["retention.ms"] = int(entry[1])
        return result
    finally:
        await admin.close()


async def catalog_events(
    bootstrap: str,
    subjects: set[str],
    *,
    until: Callable[[list[CloudEvent]], bool],
    timeout_s: float = 15.0,
) -> list[CloudEvent]:
    """Events on datapolis.catalog.events about ``subjects`` (dataset, org or
    key ids), read from the beginning until ``until`` holds or time runs out."""
    consumer = AIOKafkaConsumer(
        CATALOG_EVENTS,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[CloudEvent] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key.decode() in subjects:
                        found.append(from_structured(record.value or b""))
            if until(found):
                break
    finally:
        await consumer.stop()
    return found


def types_of(events: list[CloudEvent]) -> list[str]:
    return [e.type.split(".")[-3] + "." + e.type.split(".")[-2] for e in events]


async def wait_until(check: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.1)
