"""Schema versions: a compatible version is added on the same topic, an
incompatible one is refused naming each offending change, and a declared
major version gets a topic of its own."""

from __future__ import annotations

import copy
from typing import Any

from tests.integration.catalog.conftest import (
    METER_SCHEMA,
    CatalogApp,
    catalog_events,
    describe_topics,
    problem,
    unique_slug,
)


def _evolved(**properties: Any) -> dict[str, Any]:
    schema = copy.deepcopy(METER_SCHEMA)
    schema["properties"].update(properties)
    return schema


async def test_schema_evolution(catalog: CatalogApp) -> None:
    client = catalog.client
    org = await catalog.organisation()
    slug = unique_slug("meters")
    dataset = await catalog.dataset(org, slug=slug)
    url = f"/datasets/{slug}/schemas"

    # Compatible: a new optional property, an enum value more.
    v2 = _evolved(
        voltage={"type": "number"},
        status={"type": "string", "enum": ["measured", "estimated", "missing"]},
    )
    added = await client.post(url, json={"json_schema": v2}, headers=org.publisher)
    assert added.status_code == 201, added.text
    assert added.json() | {"created_at": None} == {
        "version": 2,
        "major": 1,
        "topic_name": f"data.{slug}",
        "json_schema": v2,
        "created_at": None,
        "created": True,
    }
    # The same schema again is not a new version.
    same = await client.post(url, json={"json_schema": v2}, headers=org.publisher)
    assert same.status_code == 200
    assert same.json()["version"] == 2
    assert same.json()["created"] is False

    # Incompatible: a new required field without default, a narrowed type,
    # a removed enum value. Refused, naming each change.
    v3 = _evolved(
        kwh={"type": "integer", "minimum": 0},
        status={"type": "string", "enum": ["measured", "missing"]},
        tariff={"type": "string"},
    )
    v3["properties"]["voltage"] = {"type": "number"}
    v3["required"] = [*v3["required"], "tariff"]
    refused = problem(
        await client.post(url, json={"json_schema": v3}, headers=org.publisher),
        409,
        "incompatible-schema",
    )
    assert sorted((c["path"], c["change"]) for c in refused["changes"]) == [
        ("/properties/kwh", "type-narrowed"),
        ("/properties/status", "enum-tightened"),
        ("/properties/tariff", "required-added"),
    ]
    assert "/properties/kwh" in refused["detail"]
    assert "'tariff' is now required" in refused["detail"]
    assert '"estimated"' in refused["detail"]
    assert refused["current_version"] == 2

    removed = copy.deepcopy(v2)
    del removed["properties"]["voltage"]
    refused = problem(
        await client.post(url, json={"json_schema": removed}, headers=org.publisher),
        409,
        "incompatible-schema",
    )
    assert refused["changes"][0]["change"] == "property-removed"
    assert "'voltage' was removed" in refused["changes"][0]["detail"]

    # Not a JSON Schema at all; a schema that drops the key field.
    problem(
        await client.post(
            url, json={"json_schema": _evolved(kwh={"type": "nombre"})}, headers=org.publisher
        ),
        422,
        "invalid-json-schema",
    )
    other = await catalog.organisation()
    problem(
        await client.post(url, json={"json_schema": v2}, headers=other.publisher),
        403,
        "not-publisher",
    )

    # Declared major: accepted, on a new topic that exists right away.
    major = await client.post(url, json={"json_schema": v3, "major": True}, headers=org.publisher)
    assert major.status_code == 201, major.text
    assert major.json()["version"] == 3
    assert major.json()["major"] == 2
    assert major.json()["topic_name"] == f"data.{slug}.v2"
    bootstrap = catalog.settings.kafka.bootstrap_servers
    topics = await describe_topics(bootstrap, [f"data.{slug}.v2"])
    assert topics[f"data.{slug}.v2"]["partitions"] == dataset["partitions"]

    page = await client.get(f"/datasets/{slug}", headers=org.publisher)
    assert page.json()["topic"] == f"data.{slug}.v2"
    assert page.json()["schema_version"] == 3
    assert page.json()["json_schema"] == v3

    versions = await client.get(url, headers=org.publisher)
    assert [(v["version"], v["major"], v["topic_name"]) for v in versions.json()] == [
        (1, 1, f"data.{slug}"),
        (2, 1, f"data.{slug}"),
        (3, 2, f"data.{slug}.v2"),
    ]
    # The ce_dataschema URL ingest stamps on records serves the schema itself.
    document = await client.get(f"/datasets/{slug}/schemas/1")
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/schema+json"
    assert document.json() == METER_SCHEMA
    problem(await client.get(f"/datasets/{slug}/schemas/9"), 404, "schema-not-found")

    events = await catalog_events(
        bootstrap,
        {dataset["dataset_id"]},
        until=lambda found: len([e for e in found if e.type.endswith("schema.added.v1")]) >= 3,
    )
    added_events = [e.data for e in events if e.type.endswith("schema.added.v1")]
    assert [(e["version"], e["major"], e["topic_name"]) for e in added_events] == [
        (1, 1, f"data.{slug}"),
        (2, 1, f"data.{slug}"),
        (3, 2, f"data.{slug}.v2"),
    ]
    assert added_events[2]["json_schema"] == v3


async def test_major_must_be_a_boolean_not_a_number(catalog: CatalogApp) -> None:
    # The document says boolean; 0 or 1 taken for false or true would let a
    # typo decide whether a new topic is made.
    org = await catalog.organisation()
    slug = unique_slug("meters")
    await catalog.dataset(org, slug=slug)
    url = f"/datasets/{slug}/schemas"
    v2 = _evolved(voltage={"type": "number"})
    for major in (0, 1, "true"):
        refused = await catalog.client.post(
            url, json={"json_schema": v2, "major": major}, headers=org.publisher
        )
        problem(refused, 422, "validation-failed")
    versions = await catalog.client.get(url, headers=org.publisher)
    assert [v["version"] for v in versions.json()] == [1]


def _nested_schema(levels: int) -> dict[str, Any]:
    """METER_SCHEMA with a property nested ``levels`` objects deep."""
    inner: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        inner = {"type": "object", "properties": {"a": inner}}
    return _evolved(deep=inner)


async def test_schemas_that_are_not_json_schema_2020_12_are_refused_not_crashed_on(
    catalog: CatalogApp,
) -> None:
    org = await catalog.organisation()
    slug = unique_slug("meters")
    await catalog.dataset(org, slug=slug)
    odd_declarations: list[Any] = [7, ["https://json-schema.org/draft/2020-12/schema"], {}]

    for declared in odd_declarations:
        schema = {**METER_SCHEMA, "$schema": declared}
        registered = await catalog.client.post(
            "/datasets",
            json={
                "slug": unique_slug(),
                "title": "Relevés",
                "theme": "energy",
                "licence": "odbl-1.0",
                "access_level": "open",
                "key_field": "meter_id",
                "json_schema": schema,
            },
            headers=org.publisher,
        )
        problem(registered, 422, "invalid-json-schema")
        added = await catalog.client.post(
            f"/datasets/{slug}/schemas", json={"json_schema": schema}, headers=org.publisher
        )
        problem(added, 422, "invalid-json-schema")


async def test_a_schema_nested_deeper_than_the_limit_is_refused_with_its_code(
    catalog: CatalogApp,
) -> None:
    org = await catalog.organisation()
    slug = unique_slug("meters")
    await catalog.dataset(org, slug=slug)
    url = f"/datasets/{slug}/schemas"

    # 64 containers: the property nests 2 per level, under 2 of the schema.
    within = await catalog.client.post(
        url, json={"json_schema": _nested_schema(30)}, headers=org.publisher
    )
    assert within.status_code == 201, within.text

    for levels in (40, 100, 400):
        refused = await catalog.client.post(
            url, json={"json_schema": _nested_schema(levels)}, headers=org.publisher
        )
        body = problem(refused, 422, "schema-too-deep")
        assert body["max_depth"] == 64
    registered = await catalog.client.post(
        "/datasets",
        json={
            "slug": unique_slug(),
            "title": "Relevés",
            "theme": "energy",
            "licence": "odbl-1.0",
            "access_level": "open",
            "key_field": "meter_id",
            "json_schema": _nested_schema(100),
        },
        headers=org.publisher,
    )
    problem(registered, 422, "schema-too-deep")


async def test_bodies_that_are_not_strict_json_are_refused_not_crashed_on(
    catalog: CatalogApp,
) -> None:
    org = await catalog.organisation()
    slug = unique_slug("meters")
    await catalog.dataset(org, slug=slug)
    schema = (
        b'{"json_schema": {"type": "object", "properties": {"meter_id": {"type": "string"}, '
        b'"kwh": {"type": "number", "minimum": %s}}}}'
    )
    for number in (b"NaN", b"Infinity", b"1e400", b"1" + b"0" * 5000):
        refused = await catalog.client.post(
            f"/datasets/{slug}/schemas",
            content=schema % number,
            headers={**org.publisher, "content-type": "application/json"},
        )
        problem(refused, 422, "validation-failed")
    surrogate = await catalog.client.post(
        "/organisations",
        content=b'{"name": "Lone \\ud800 surrogate", "kind": "company", '
        b'"contact_email": "a@example.org"}',
        headers={**org.admin, "content-type": "application/json"},
    )
    problem(surrogate, 422, "validation-failed")
