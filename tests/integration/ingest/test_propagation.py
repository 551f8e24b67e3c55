"""A dataset or schema version catalog has just answered 201 for is used by
ingest within the bound ingest states (``propagation_bound_s``); until then a
request for it gets a retryable 503 with Retry-After and a "not known yet"
code, never an answer that sends the producer to the wrong fix.

Catalog and ingest run here as they do in production, each on its own
PostgreSQL schema, connected only by catalog's outbox, Kafka's
datapolis.catalog.events and ingest's registry.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from datapolis_catalog.app import create_app as create_catalog
from datapolis_catalog.settings import CatalogSettings
from datapolis_ingest.settings import IngestSettings
from datapolis_shared.events.catalog import DatasetRegistered
from datapolis_shared.kafka import ConsumerLoop, Producer
from datapolis_shared.postgres.migrate import apply, load, service_migrations
from datapolis_shared.settings import DEV_OPERATOR_KEY, ServiceSettings
from tests.apps import running
from tests.integration.catalog.conftest import delete_topics
from tests.integration.ingest.conftest import (
    SETUP_WAIT_S,
    DatasetFactory,
    Ingest,
    IngestFactory,
    Publisher,
    reading,
    until_key_works,
    until_known,
)
from tests.kafka_util import eventually

OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}
VERSION_HEADER = "Datapolis-Schema-Version"
# What ingest states (README, propagation): the default of the setting.
BOUND_S = IngestSettings(dev=True).propagation_bound_s
NOT_KNOWN_YET = {"dataset-not-known-yet", "schema-version-not-known-yet"}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "status": {"type": "string", "enum": ["measured"]},
    },
    "required": ["meter_id", "kwh"],
}


@dataclass
class Catalog:
    client: httpx.AsyncClient
    topics: list[str]


@pytest.fixture
async def catalog(service_settings: ServiceSettings, database_url: str) -> AsyncIterator[Catalog]:
    """A catalog app on a PostgreSQL schema of its own (its tables have the
    same names as ingest's), publishing to the shared datapolis.catalog.events."""
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
            yield Catalog(client, topics)
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


async def _producer_of(catalog: Catalog, ingest: Ingest) -> Publisher:
    """An organisation with a key to publish and push, usable in ingest."""
    created = await catalog.client.post(
        "/organisations",
        json={"name": f"Org {uuid.uuid4().hex[:8]}", "kind": "company", "contact_email": "a@b.org"},
        headers=OPERATOR,
    )
    assert created.status_code == 201, created.text
    org_id = created.json()["org_id"]
    issued = await catalog.client.post(
        f"/organisations/{org_id}/keys",
        json={"scopes": ["publish", "ingest", "read"]},
        headers=OPERATOR,
    )
    assert issued.status_code == 201, issued.text
    who = Publisher(org_id, issued.json()["token"], issued.json()["key_id"])
    await until_key_works(ingest, who)
    await until_caught_up(ingest)
    return who


async def until_caught_up(ingest: Ingest) -> None:
    """The bound holds once ingest has applied catalog's history: a new
    consumer group first reads the shared topic from its beginning."""
    registry = _registry_consumer(ingest)
    await eventually(lambda: registry.behind == 0, timeout_s=SETUP_WAIT_S)


async def _register(catalog: Catalog, who: Publisher) -> tuple[str, int]:
    slug = f"meters-{uuid.uuid4().hex[:10]}"
    created = await catalog.client.post(
        "/datasets",
        json={
            "slug": slug,
            "title": "Relevés des compteurs",
            "theme": "energy",
            "licence": "odbl-1.0",
            "access_level": "open",
            "key_field": "meter_id",
            "partitions": 1,
            "json_schema": SCHEMA,
        },
        headers=who.headers,
    )
    assert created.status_code == 201, created.text
    return slug, int(created.json()["schema_version"])


def _not_known_yet(response: httpx.Response) -> str:
    """The code of a retryable 'not known yet' answer (fails on anything else)."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    code: str = response.json()["code"]
    assert code in NOT_KNOWN_YET, response.text
    return code


async def _push_until_accepted(
    ingest: Ingest, who: Publisher, slug: str, record: dict[str, Any], version: int
) -> tuple[dict[str, Any], float, list[str]]:
    """Push at once, then retry every 50 ms as long as the answer is 'not known
    yet'; returns the accepted answer, when it came, and the 503 codes seen."""
    started = time.monotonic()
    seen: list[str] = []
    while True:
        response = await ingest.client.post(
            f"/datasets/{slug}/records",
            json=[record],
            headers={**who.headers, VERSION_HEADER: str(version)},
        )
        if response.status_code == 200:
            answer: dict[str, Any] = response.json()
            return answer, time.monotonic() - started, seen
        seen.append(_not_known_yet(response))
        assert time.monotonic() - started <= BOUND_S, (
            f"still {seen[-1]} {BOUND_S}s after catalog's 201"
        )
        await asyncio.sleep(0.05)


def _registry_consumer(ingest: Ingest) -> ConsumerLoop:
    consumers: list[ConsumerLoop] = ingest.app.state.runtime.consumers
    (registry,) = [c for c in consumers if c.name == "dataset-registry"]
    return registry


async def test_a_dataset_pushed_to_right_after_its_201_is_accepted_or_not_known_yet(
    catalog: Catalog, ingest: Ingest
) -> None:
    who = await _producer_of(catalog, ingest)
    for i in range(3):
        slug, version = await _register(catalog, who)
        assert version == 1
        # Never 404 dataset-not-found or 409 dataset-without-schema: the
        # producer did nothing wrong and only has to retry.
        answer, took, _ = await _push_until_accepted(ingest, who, slug, reading(i), version)
        assert answer["accepted"] == 1, answer
        assert answer["schema_version"] == 1
        assert took <= BOUND_S

    # Catalog creates the topics before it answers, so ingest often knows a
    # dataset by then. Holding its registry consumer back makes the moment
    # before it knows last long enough to be seen every time.
    registry = _registry_consumer(ingest)
    await registry.stop()
    slug, version = await _register(catalog, who)
    assert (
        _not_known_yet(
            await ingest.client.post(
                f"/datasets/{slug}/records", json=[reading(9)], headers=who.headers
            )
        )
        == "dataset-not-known-yet"
    )
    registry.start()
    answer, _, _ = await _push_until_accepted(ingest, who, slug, reading(9), version)
    assert answer["accepted"] == 1


async def test_a_dataset_whose_schema_is_on_its_way_is_not_known_yet(
    start_ingest: IngestFactory, publisher: Publisher, producer: Producer
) -> None:
    ingest = await start_ingest()
    await until_key_works(ingest, publisher)
    slug = f"meters-{uuid.uuid4().hex[:10]}"
    dataset_id = f"ds-{uuid.uuid4().hex[:12]}"
    # Catalog sends the dataset and its first schema version as two events:
    # ingest may apply the first and answer before the second arrives.
    await producer.send_event(
        DatasetRegistered(
            dataset_id=dataset_id,
            slug=slug,
            publisher_id=publisher.org_id,
            access_level="open",
            key_field_name="meter_id",
            topic_name=f"data.{slug}",
        )
    )
    await until_known(ingest, slug)
    pushed = await ingest.client.post(
        f"/datasets/{slug}/records", json=[reading(0)], headers=publisher.headers
    )
    assert _not_known_yet(pushed) == "schema-version-not-known-yet"


async def test_records_of_a_new_schema_version_are_never_validated_under_the_old_one(
    catalog: Catalog, ingest: Ingest
) -> None:
    who = await _producer_of(catalog, ingest)
    slug, _ = await _register(catalog, who)
    await until_known(ingest, slug, version=1)
    statuses = ["measured"]
    seen: list[str] = []
    for n in range(2, 5):
        # A compatible widening: a record with the new status is refused by
        # every earlier version.
        statuses.append(f"status-{n}")
        schema = {**SCHEMA, "properties": {**SCHEMA["properties"]}}
        schema["properties"]["status"] = {"type": "string", "enum": list(statuses)}
        added = await catalog.client.post(
            f"/datasets/{slug}/schemas", json={"json_schema": schema}, headers=who.headers
        )
        assert added.status_code == 201, added.text
        version = added.json()["version"]
        assert version == n
        record = reading(n, status=statuses[-1])
        answer, took, codes = await _push_until_accepted(ingest, who, slug, record, version)
        assert answer["rejected"] == [], f"validated under an older version: {answer}"
        assert answer["accepted"] == 1
        assert answer["schema_version"] >= version
        assert took <= BOUND_S
        assert set(codes) <= {"schema-version-not-known-yet"}
        seen.extend(codes)
    assert seen, "ingest knew every version before the first push"


async def test_a_name_that_never_appears_is_not_found_after_the_bound(
    start_ingest: IngestFactory, publisher: Publisher, register_dataset: DatasetFactory
) -> None:
    bound_s = 1.0
    ingest = await start_ingest(propagation_bound_s=bound_s)
    dataset = await register_dataset(publisher.org_id)
    await until_known(ingest, dataset.slug, version=1)
    await until_key_works(ingest, publisher)
    await until_caught_up(ingest)

    async def push(slug: str, version: int | None = None) -> httpx.Response:
        headers = dict(publisher.headers)
        if version is not None:
            headers[VERSION_HEADER] = str(version)
        return await ingest.client.post(
            f"/datasets/{slug}/records", json=[reading(0)], headers=headers
        )

    # A name catalog would refuse can never exist: 404 at once.
    invalid = await push("Not_A_Slug")
    assert invalid.status_code == 404
    assert invalid.json()["code"] == "dataset-not-found"

    # A well-formed unknown slug, and a version the dataset does not have:
    # not known yet at first, final once the bound has passed since the
    # first attempt.
    unknown_slug = f"meters-{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    assert _not_known_yet(await push(unknown_slug)) == "dataset-not-known-yet"
    assert _not_known_yet(await push(dataset.slug, 7)) == "schema-version-not-known-yet"

    async def settled() -> bool:
        missing, future = await push(unknown_slug), await push(dataset.slug, 7)
        if missing.status_code == 503 or future.status_code == 503:
            _not_known_yet(missing if missing.status_code == 503 else future)
            return False
        assert missing.status_code == 404, missing.text
        assert missing.json()["code"] == "dataset-not-found"
        assert future.status_code == 409, future.text
        assert future.json()["code"] == "schema-version-not-found"
        assert future.json()["current_version"] == 1
        return True

    # The answer becomes final once the bound has passed and ingest is caught
    # up with catalog's events (which other tests on the broker keep adding to).
    await eventually(settled, timeout_s=bound_s + SETUP_WAIT_S, interval_s=0.2)
    assert time.monotonic() - started >= bound_s

    # The version the dataset has, or an earlier one, is accepted.
    accepted = await push(dataset.slug, 1)
    assert accepted.status_code == 200, accepted.text
    assert (await push(dataset.slug)).status_code == 200
    bad_header = await ingest.client.post(
        f"/datasets/{dataset.slug}/records",
        json=[reading(1)],
        headers={**publisher.headers, VERSION_HEADER: "v2"},
    )
    assert bad_header.status_code == 422
    assert bad_header.json()["code"] == "invalid-schema-version"
