"""Every operation of every service's OpenAPI document, sent a hostile-input
corpus (see ``corpus``) with the operator's key and with an organisation's:
never a server error, every refusal a problem+json with a stable code, and
the service still answers a normal request afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from datapolis_catalog.app import create_app as create_catalog
from datapolis_catalog.settings import CatalogSettings
from datapolis_consent.app import create_app as create_consent
from datapolis_consent.settings import ConsentSettings
from datapolis_ingest.app import create_app as create_ingest
from datapolis_ingest.settings import IngestSettings
from datapolis_notify.app import create_app as create_notify
from datapolis_notify.settings import NotifySettings
from datapolis_shared.auth import generate_key
from datapolis_shared.events.catalog import ApiKeyIssued, DatasetRegistered, SchemaVersionAdded
from datapolis_shared.kafka import Producer, TopicSpec, ensure_topics
from datapolis_shared.postgres.migrate import service_migrations
from datapolis_shared.settings import DEV_OPERATOR_KEY, ServiceSettings
from tests.apps import running
from tests.integration.catalog.conftest import delete_topics
from tests.integration.hostile.corpus import Attempt, attempts, operations, skeleton
from tests.kafka_util import eventually

OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}
ALL_SCOPES = ["read", "publish", "ingest", "consent", "subscribe", "admin"]

METER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "measured_at": {"type": "string", "format": "date-time"},
    },
    "required": ["meter_id", "kwh"],
}


@contextlib.asynccontextmanager
async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sees a crash as the 500 a real client would get."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hostile") as client:
        yield client


@dataclass
class Target:
    """A running service and what its operations need to get past the door."""

    client: httpx.AsyncClient
    keys: dict[str, dict[str, str]]  # who -> headers
    path_values: dict[str, str]
    # Plausible bodies, by "METHOD /path" (otherwise built from the schema).
    examples: dict[str, Any] = field(default_factory=dict)
    normal: Callable[[], Awaitable[httpx.Response]] | None = None
    topics: list[str] = field(default_factory=list)


@dataclass
class Finding:
    who: str
    attempt: Attempt
    status: int
    content_type: str
    body: str

    def __str__(self) -> str:
        return (
            f"{self.attempt.method} {self.attempt.path[:120]} [{self.attempt.name}] as {self.who}: "
            f"{self.status} {self.content_type} {self.body[:300]}"
        )


async def _hammer(target: Target, settings: ServiceSettings) -> list[Finding]:
    document = (await target.client.get("/openapi.json")).json()
    findings: list[Finding] = []
    # Deletions last: they revoke the key or retire the dataset the rest use.
    ops = sorted(operations(document), key=lambda op: op.method == "delete")
    assert ops, "the OpenAPI document lists no operation"
    for op in ops:
        example = target.examples.get(f"{op.method.upper()} {op.path}")
        if example is None and op.body_schema is not None:
            example = skeleton(document, op.body_schema)
        for attempt in attempts(
            op,
            path_values=target.path_values,
            example=example,
            max_body_bytes=settings.http.max_body_bytes,
            max_header_bytes=settings.http.max_header_bytes,
        ):
            for who, key in target.keys.items():
                response = await target.client.request(
                    attempt.method,
                    attempt.path,
                    content=attempt.body,
                    headers={**key, **attempt.headers},
                )
                finding = _judge(who, attempt, response)
                if finding is not None:
                    findings.append(finding)
    return findings


def _judge(who: str, attempt: Attempt, response: httpx.Response) -> Finding | None:
    content_type = response.headers.get("content-type", "")
    status = response.status_code

    def found() -> Finding:
        return Finding(who, attempt, status, content_type, response.text)

    if status >= 500:
        return found()
    if 400 <= status < 500:
        if content_type != "application/problem+json":
            return found()
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return found()
        if not isinstance(body.get("code"), str) or body.get("status") != status:
            return found()
    return None


async def _check(target: Target, settings: ServiceSettings) -> None:
    findings = await _hammer(target, settings)
    assert not findings, f"{len(findings)} finding(s):\n" + "\n".join(str(f) for f in findings[:40])
    assert target.normal is not None
    after = await target.normal()
    assert after.status_code == 200, after.text


async def _issue_key(producer: Producer, org_id: str) -> tuple[str, str]:
    key = generate_key()
    await producer.send_event(
        ApiKeyIssued(
            key_id=key.key_id,
            org_id=org_id,
            scopes=ALL_SCOPES,
            secret_hash=key.secret_hash,
            issued_at=datetime.now(UTC),
        )
    )
    return key.key_id, key.token


async def _until_key_works(app: FastAPI, token: str) -> None:
    async def works() -> bool:
        try:
            await app.state.runtime.keys.resolve(token)
        except Exception:
            return False
        return True

    await eventually(works, timeout_s=60, interval_s=0.2)


@pytest.fixture
async def catalog_target(service_settings: ServiceSettings) -> AsyncIterator[Target]:
    settings = CatalogSettings(**dict(service_settings))
    app = create_catalog(settings)
    async with (
        running(app, migrations=service_migrations("datapolis_catalog")),
        _client(app) as client,
    ):
        created = await client.post(
            "/organisations",
            json={"name": "Hostile Org", "kind": "company", "contact_email": "a@example.org"},
            headers=OPERATOR,
        )
        assert created.status_code == 201, created.text
        org_id = created.json()["org_id"]
        issued = await client.post(
            f"/organisations/{org_id}/keys", json={"scopes": ALL_SCOPES}, headers=OPERATOR
        )
        token = issued.json()["token"]
        spare = await client.post(
            f"/organisations/{org_id}/keys", json={"scopes": ["read"]}, headers=OPERATOR
        )
        org = {"Authorization": f"Bearer {token}"}
        slug = f"hostile-{uuid.uuid4().hex[:8]}"
        registration = {
            "slug": slug,
            "title": "Relevés des compteurs",
            "description": "Relevés horaires.",
            "theme": "energy",
            "keywords": ["compteurs"],
            "licence": "odbl-1.0",
            "access_level": "open",
            "key_field": "meter_id",
            "update_frequency": "hourly",
            "retention_days": 1,
            "partitions": 1,
            "json_schema": METER_SCHEMA,
        }
        dataset = await client.post("/datasets", json=registration, headers=org)
        assert dataset.status_code == 201, dataset.text

        async def normal() -> httpx.Response:
            return await client.get(f"/organisations/{org_id}", headers=OPERATOR)

        target = Target(
            client,
            {"operator": OPERATOR, "organisation": org},
            {"slug": slug, "org_id": org_id, "key_id": spare.json()["key_id"], "version": "1"},
            examples={
                "POST /datasets": {**registration, "slug": f"hostile-{uuid.uuid4().hex[:8]}"},
                "POST /datasets/{slug}/schemas": {"json_schema": METER_SCHEMA},
            },
            normal=normal,
        )
        try:
            yield target
        finally:
            topics = [
                r["topic_name"]
                for r in await app.state.runtime.pool.fetch("SELECT topic_name FROM dataset_topics")
            ]
    await delete_topics(settings.kafka.bootstrap_servers, topics)


def _knows_version(app: FastAPI, slug: str, version: int) -> bool:
    dataset = app.state.registry.get(slug)
    return dataset is not None and dataset.schema_version == version


@pytest.fixture
async def ingest_target(
    service_settings: ServiceSettings, producer: Producer
) -> AsyncIterator[Target]:
    settings = IngestSettings(**dict(service_settings))
    app = create_ingest(settings)
    async with (
        running(app, migrations=service_migrations("datapolis_ingest")),
        _client(app) as client,
    ):
        org_id = f"org-{uuid.uuid4().hex[:8]}"
        _key_id, token = await _issue_key(producer, org_id)
        slug = f"hostile-{uuid.uuid4().hex[:8]}"
        dataset_id = f"ds-{uuid.uuid4().hex[:12]}"
        topics = [f"data.{slug}", f"raw.{slug}"]
        await ensure_topics(settings.kafka, [TopicSpec(t, 1) for t in topics])
        await producer.send_event(
            DatasetRegistered(
                dataset_id=dataset_id,
                slug=slug,
                publisher_id=org_id,
                access_level="open",
                key_field_name="meter_id",
                topic_name=topics[0],
            )
        )
        await producer.send_event(
            SchemaVersionAdded(
                dataset_id=dataset_id,
                slug=slug,
                version=1,
                major=1,
                topic_name=topics[0],
                json_schema=METER_SCHEMA,
            )
        )
        await _until_key_works(app, token)
        # Known with its schema: a dataset whose first version has not been
        # applied yet is a retryable 503 (schema-version-not-known-yet).
        await eventually(lambda: _knows_version(app, slug, 1), timeout_s=60)
        record = {
            "id": "r-1",
            "meter_id": "m-1",
            "kwh": 1.5,
            "measured_at": "2025-03-01T12:00:00+00:00",
        }
        org = {"Authorization": f"Bearer {token}"}

        async def normal() -> httpx.Response:
            answer = await client.post(
                f"/datasets/{slug}/records",
                json=[{**record, "id": uuid.uuid4().hex}],
                headers=org,
            )
            assert answer.status_code != 200 or answer.json()["accepted"] == 1, answer.text
            return answer

        yield Target(
            client,
            {"operator": OPERATOR, "organisation": org},
            {"slug": slug},
            examples={"POST /datasets/{slug}/records": [record]},
            normal=normal,
        )
    await delete_topics(settings.kafka.bootstrap_servers, topics)


async def _plain_target(app: FastAPI, client: httpx.AsyncClient, producer: Producer) -> Target:
    _key_id, token = await _issue_key(producer, f"org-{uuid.uuid4().hex[:8]}")
    await _until_key_works(app, token)

    async def normal() -> httpx.Response:
        return await client.get("/readyz")

    return Target(
        client,
        {"operator": OPERATOR, "organisation": {"Authorization": f"Bearer {token}"}},
        {},
        normal=normal,
    )


async def test_catalog_survives_the_hostile_corpus(
    catalog_target: Target, service_settings: ServiceSettings
) -> None:
    await _check(catalog_target, service_settings)


async def test_ingest_survives_the_hostile_corpus(
    ingest_target: Target, service_settings: ServiceSettings
) -> None:
    await _check(ingest_target, service_settings)


async def test_consent_survives_the_hostile_corpus(
    service_settings: ServiceSettings, producer: Producer
) -> None:
    app = create_consent(ConsentSettings(**dict(service_settings)))
    async with (
        running(app, migrations=service_migrations("datapolis_consent")),
        _client(app) as client,
    ):
        await _check(await _plain_target(app, client, producer), service_settings)


async def _notify_target(app: FastAPI, client: httpx.AsyncClient, producer: Producer) -> Target:
    """An organisation with an open dataset, a webhook subscription to it and
    a dead letter, so the corpus reaches past the 404s of unknown ids."""
    org_id = f"org-{uuid.uuid4().hex[:8]}"
    _key_id, token = await _issue_key(producer, org_id)
    await _until_key_works(app, token)
    pool = app.state.runtime.pool
    slug = f"hostile-{uuid.uuid4().hex[:8]}"
    await pool.execute(
        "INSERT INTO datasets (dataset_id, slug, publisher_id, access_level, topic_name, fields) "
        "VALUES ($1, $2, $3, 'open', $4, $5)",
        f"ds-{uuid.uuid4().hex[:12]}", slug, org_id, f"data.{slug}", ["meter_id", "kwh"],
    )  # fmt: skip
    org = {"Authorization": f"Bearer {token}"}
    subscription = {"dataset": slug, "channel": "webhook", "url": "https://partner.example/hook"}
    created = await client.post("/subscriptions", json=subscription, headers=org)
    assert created.status_code == 201, created.text
    subscription_id = created.json()["subscription_id"]
    delivery_id = f"msg_{uuid.uuid4().hex}"
    await pool.execute(
        "INSERT INTO deliveries (delivery_id, subscription_id, consumer_id, channel, kind, status) "
        "VALUES ($1, $2, $3, 'webhook', 'records', 'dead')",
        delivery_id, subscription_id, org_id,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO delivery_queue (delivery_id, subscription_id, payload, state, dead_at) "
        "VALUES ($1, $2, '[]', 'dead', now())",
        delivery_id, subscription_id,
    )  # fmt: skip

    async def normal() -> httpx.Response:
        return await client.get(f"/deliveries/{delivery_id}", headers=org)

    return Target(
        client,
        {"operator": OPERATOR, "organisation": org},
        {"subscription_id": subscription_id, "delivery_id": delivery_id},
        examples={
            "POST /subscriptions": subscription,
            "PATCH /subscriptions/{subscription_id}": {"filter": {"kwh": 1}, "themes": ["x"]},
            "POST /subscriptions/{subscription_id}/secrets/rotate": {"overlap_seconds": 60},
            "POST /dead-letters/replay": {"subscription_id": subscription_id},
        },
        normal=normal,
    )


async def test_notify_survives_the_hostile_corpus(
    service_settings: ServiceSettings, producer: Producer
) -> None:
    app = create_notify(NotifySettings(**dict(service_settings)))
    async with (
        running(app, migrations=service_migrations("datapolis_notify")),
        _client(app) as client,
    ):
        await _check(await _notify_target(app, client, producer), service_settings)
