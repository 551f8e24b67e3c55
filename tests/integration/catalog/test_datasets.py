"""Datasets: registering one provisions its topics and announces it through the
outbox; only its publisher changes or retires it; a dataset registered while
Kafka is unreachable gets its topics once Kafka answers again."""

from __future__ import annotations

from typing import Any

from datapolis_shared.events.cloudevents import CloudEvent
from datapolis_shared.settings import KafkaSettings
from tests.integration.catalog.conftest import (
    METER_SCHEMA,
    OPERATOR,
    CatalogApp,
    catalog_events,
    describe_topics,
    problem,
    unique_slug,
)

DAY_MS = 24 * 3600 * 1000


def _of_type(events: list[CloudEvent], what: str) -> list[CloudEvent]:
    return [e for e in events if e.type == f"org.datapolis.catalog.{what}.v1"]


async def test_registering_a_dataset_provisions_topics_and_announces_it(
    catalog: CatalogApp,
) -> None:
    org = await catalog.organisation()
    slug = unique_slug("conso")
    dataset = await catalog.dataset(org, slug=slug, partitions=2, retention_days=3)
    assert dataset["topic"] == f"data.{slug}"
    assert dataset["raw_topic"] == f"raw.{slug}"
    assert dataset["publisher"] == {"org_id": org.org_id, "name": org.name}
    assert dataset["topics_provisioned"] is True
    assert dataset["schema_version"] == 1

    bootstrap = catalog.settings.kafka.bootstrap_servers
    topics = await describe_topics(bootstrap, [f"data.{slug}", f"raw.{slug}"])
    assert topics == {
        f"data.{slug}": {"partitions": 2, "retention.ms": 3 * DAY_MS},
        f"raw.{slug}": {"partitions": 2, "retention.ms": 3 * DAY_MS},
    }

    dataset_id = dataset["dataset_id"]
    events = await catalog_events(
        bootstrap,
        {dataset_id},
        until=lambda found: bool(_of_type(found, "dataset.registered"))
        and bool(_of_type(found, "schema.added")),
    )
    [registered] = _of_type(events, "dataset.registered")
    assert registered.source == "/datapolis/catalog"
    assert registered.data == {
        "dataset_id": dataset_id,
        "slug": slug,
        "publisher_id": org.org_id,
        "access_level": "open",
        "key_field_name": "meter_id",
        "subject_field": None,
        "topic_name": f"data.{slug}",
        "theme": "energy",
    }
    [schema_added] = _of_type(events, "schema.added")
    assert schema_added.data["version"] == 1
    assert schema_added.data["major"] == 1
    assert schema_added.data["topic_name"] == f"data.{slug}"
    assert schema_added.data["json_schema"] == METER_SCHEMA
    # Published through the outbox: nothing is left behind.
    assert await catalog.app.state.runtime.relay.backlog() == 0


async def test_registration_refusals_are_specific(catalog: CatalogApp) -> None:
    client = catalog.client
    org = await catalog.organisation()
    reader = await catalog.key(org.org_id, ["read"], headers=org.admin)
    base: dict[str, Any] = {
        "slug": unique_slug(),
        "title": "Compteurs",
        "theme": "energy",
        "licence": "odbl-1.0",
        "access_level": "open",
        "json_schema": METER_SCHEMA,
    }

    async def refused(headers: dict[str, str] | None = None, **changes: Any) -> Any:
        return await client.post(
            "/datasets", json={**base, **changes}, headers=headers or org.publisher
        )

    problem(await refused({"Authorization": f"Bearer {reader}"}), 403, "missing-scope")
    problem(await refused(slug="Not A Slug"), 422, "validation-failed")
    problem(await refused(theme="gastronomy"), 422, "validation-failed")
    problem(await refused(access_level="personal"), 422, "subject-field-required")
    problem(await refused(subject_field="household"), 422, "subject-field-not-personal")
    problem(
        await refused(access_level="personal", subject_field="household"),
        422,
        "subject-field-not-required",
    )
    problem(await refused(licence="proprietary"), 422, "licence-not-open")
    problem(await refused(key_field="serial"), 422, "key-field-not-in-schema")
    problem(
        await refused(json_schema={"type": "object", "properties": {"a": {"type": "text"}}}),
        422,
        "invalid-json-schema",
    )
    problem(await refused(publisher_id="someone-else"), 403, "not-your-organisation")
    problem(await refused(OPERATOR), 422, "publisher-required")
    problem(await refused(OPERATOR, publisher_id="ghost"), 404, "organisation-not-found")

    # Text PostgreSQL cannot store is bad input too, never a 500.
    unstorable = problem(await refused(title="Compteurs\u0000"), 422, "unstorable-value")
    # In a plain sentence: PostgreSQL's own message stays in the log.
    assert "byte sequence" not in unstorable["detail"]
    assert "UTF8" not in unstorable["detail"]
    problem(await client.get("/datasets/%00", headers=org.publisher), 422, "unstorable-value")

    first = await refused()
    assert first.status_code == 201, first.text
    catalog.slugs.append(base["slug"])
    problem(await refused(), 409, "slug-taken")

    # The operator registers on behalf of an organisation.
    personal = await refused(
        OPERATOR,
        slug=unique_slug("linky"),
        publisher_id=org.org_id,
        access_level="personal",
        licence="proprietary",
        subject_field="household",
        json_schema={**METER_SCHEMA, "required": [*METER_SCHEMA["required"], "household"]},
    )
    assert personal.status_code == 201, personal.text
    assert personal.json()["publisher"]["org_id"] == org.org_id
    assert personal.json()["subject_field"] == "household"


async def test_only_the_publisher_updates_and_retires(catalog: CatalogApp) -> None:
    client = catalog.client
    owner = await catalog.organisation()
    other = await catalog.organisation()
    dataset = await catalog.dataset(owner)
    slug = dataset["slug"]

    problem(
        await client.patch(
            f"/datasets/{slug}", json={"title": "Mine now"}, headers=other.publisher
        ),
        403,
        "not-publisher",
    )
    problem(await client.delete(f"/datasets/{slug}", headers=other.publisher), 403, "not-publisher")
    problem(
        await client.patch(
            f"/datasets/{slug}", json={"access_level": "open"}, headers=owner.publisher
        ),
        422,
        "validation-failed",
    )
    problem(
        await client.patch(f"/datasets/{slug}", json={}, headers=owner.publisher),
        422,
        "validation-failed",
    )
    problem(
        await client.patch(
            f"/datasets/{slug}", json={"licence": "proprietary"}, headers=owner.publisher
        ),
        422,
        "licence-not-open",
    )

    updated = await client.patch(
        f"/datasets/{slug}",
        json={"title": "Consommation électrique horaire", "keywords": ["Linky", "kWh"]},
        headers=owner.publisher,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["title"] == "Consommation électrique horaire"
    assert updated.json()["keywords"] == ["linky", "kwh"]
    # The operator may change anyone's dataset.
    by_operator = await client.patch(
        f"/datasets/{slug}", json={"theme": "environment"}, headers=OPERATOR
    )
    assert by_operator.json()["theme"] == "environment"

    retired = await client.delete(f"/datasets/{slug}", headers=owner.publisher)
    assert retired.status_code == 200
    assert retired.json()["status"] == "retired"
    # Retired: topics kept, no more changes, hidden from discovery unless asked.
    assert retired.json()["topic"] == f"data.{slug}"
    problem(
        await client.patch(f"/datasets/{slug}", json={"title": "Back"}, headers=owner.publisher),
        409,
        "dataset-retired",
    )
    listed = await client.get("/datasets", headers=owner.publisher)
    assert slug not in [d["slug"] for d in listed.json()["items"]]
    listed = await client.get("/datasets?include_retired=true", headers=owner.publisher)
    assert slug in [d["slug"] for d in listed.json()["items"]]
    topics = await describe_topics(catalog.settings.kafka.bootstrap_servers, [f"data.{slug}"])
    assert f"data.{slug}" in topics

    events = await catalog_events(
        catalog.settings.kafka.bootstrap_servers,
        {dataset["dataset_id"]},
        until=lambda found: len(_of_type(found, "dataset.retired")) == 1
        and len(_of_type(found, "dataset.updated")) == 2,
    )
    updates = _of_type(events, "dataset.updated")
    assert [u.data["changes"] for u in updates] == [
        {"title": "Consommation électrique horaire", "keywords": ["linky", "kwh"]},
        {"theme": "environment"},
    ]
    assert _of_type(events, "dataset.retired")[0].data == {
        "dataset_id": dataset["dataset_id"],
        "slug": slug,
    }


async def test_topics_follow_when_kafka_was_down_at_registration(catalog: CatalogApp) -> None:
    org = await catalog.organisation()
    provisioner = catalog.state.provisioner
    reachable = provisioner.kafka
    # Kafka "goes down" for topic creation: nothing answers on this port.
    provisioner.kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", request_timeout_ms=1000)
    slug = unique_slug("late")
    try:
        dataset = await catalog.dataset(org, slug=slug)
    finally:
        provisioner.kafka = reachable
    # The registration is committed and announced; the topics are owed.
    assert dataset["topics_provisioned"] is False
    bootstrap = catalog.settings.kafka.bootstrap_servers
    assert await describe_topics(bootstrap, [f"data.{slug}", f"raw.{slug}"]) == {}

    # The reconciliation (on its interval, or nudged) creates them.
    assert await provisioner.provision() is True
    topics = await describe_topics(bootstrap, [f"data.{slug}", f"raw.{slug}"])
    assert set(topics) == {f"data.{slug}", f"raw.{slug}"}
    page = await catalog.client.get(f"/datasets/{slug}", headers=org.publisher)
    assert page.json()["topics_provisioned"] is True
