"""What a publisher does in catalog reaches consent through Kafka alone.

Catalog and consent run here as they do in production, each on its own
PostgreSQL schema, connected only by catalog's outbox, the shared
datapolis.catalog.events topic and consent's dataset projection.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from datapolis_consent.datasets import fields_of
from datapolis_shared.events import CATALOG_EVENTS
from datapolis_shared.settings import DEV_OPERATOR_KEY
from tests.integration.consent.conftest import SETUP_WAIT_S, ConsentFactory
from tests.kafka_util import eventually

OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_KEY}"}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "household": {"type": "string"},
    },
    "required": ["meter_id", "kwh", "household"],
}


async def test_a_dataset_registered_widened_and_retired_in_catalog_reaches_consent(
    catalog: httpx.AsyncClient, start_consent: ConsentFactory
) -> None:
    consent = await start_consent(CATALOG_EVENTS)
    created = await catalog.post(
        "/organisations",
        json={"name": f"Org {uuid.uuid4().hex[:8]}", "kind": "company", "contact_email": "a@b.org"},
        headers=OPERATOR,
    )
    assert created.status_code == 201, created.text
    org_id = created.json()["org_id"]
    issued = await catalog.post(
        f"/organisations/{org_id}/keys", json={"scopes": ["publish", "read"]}, headers=OPERATOR
    )
    assert issued.status_code == 201, issued.text
    publisher = {"Authorization": f"Bearer {issued.json()['token']}"}

    slug = f"linky-{uuid.uuid4().hex[:10]}"
    registered = await catalog.post(
        "/datasets",
        json={
            "slug": slug,
            "title": "Courbes de charge des ménages",
            "theme": "energy",
            "licence": "proprietary",
            "access_level": "personal",
            "key_field": "meter_id",
            "subject_field": "household",
            "partitions": 1,
            "json_schema": SCHEMA,
        },
        headers=publisher,
    )
    assert registered.status_code == 201, registered.text
    dataset_id = registered.json()["dataset_id"]

    await consent.until_known(dataset_id, version=1)
    known = await consent.dataset(slug)
    assert known.dataset_id == dataset_id
    assert known.publisher_id == org_id
    assert known.access_level == "personal"
    assert known.subject_field == "household"
    assert fields_of(known) == ("meter_id", "kwh", "household")

    widened = {**SCHEMA, "properties": {**SCHEMA["properties"], "tariff": {"type": "string"}}}
    added = await catalog.post(
        f"/datasets/{slug}/schemas", json={"json_schema": widened}, headers=publisher
    )
    assert added.status_code == 201, added.text
    await consent.until_known(dataset_id, version=2)
    assert fields_of(await consent.dataset(slug)) == ("meter_id", "kwh", "household", "tariff")

    retired = await catalog.delete(f"/datasets/{slug}", headers=publisher)
    assert retired.status_code == 200, retired.text

    async def retired_in_consent() -> bool:
        return (await consent.dataset(dataset_id)).retired

    await eventually(retired_in_consent, timeout_s=SETUP_WAIT_S)
    # Consent also replays the topic's history: other datasets retire too.
    assert [d.slug for d in consent.retirements if d.dataset_id == dataset_id] == [slug]
