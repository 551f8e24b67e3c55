"""Discovery: filters, full-text search in French and English, cursor
pagination, and a dataset's page telling how to subscribe."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.catalog.conftest import (
    METER_SCHEMA,
    CatalogApp,
    Org,
    problem,
    unique_slug,
)

PERSONAL_SCHEMA = {**METER_SCHEMA, "required": [*METER_SCHEMA["required"], "household"]}


async def _slugs(client: httpx.AsyncClient, org: Org, query: str) -> list[str]:
    response = await client.get(f"/datasets?{query}", headers=org.publisher)
    assert response.status_code == 200, response.text
    return [d["slug"] for d in response.json()["items"]]


async def test_filters_search_and_pages(catalog: CatalogApp) -> None:
    client = catalog.client
    lyon = await catalog.organisation("Métropole de Lyon", kind="public-authority")
    tcl = await catalog.organisation("Transports en commun", kind="company")
    made: dict[str, dict[str, Any]] = {}

    async def make(name: str, org: Org, **fields: Any) -> None:
        made[name] = await catalog.dataset(org, slug=unique_slug(name), **fields)

    await make(
        "elec", lyon, title="Consommation électrique des ménages", keywords=["linky", "Électricité"]
    )
    await make(
        "water",
        lyon,
        title="Qualité de l'eau potable",
        description="Mesures de chlore et de turbidité",
        theme="water",
        keywords=["eau"],
    )
    await make(
        "bus",
        tcl,
        title="Bus positions in real time",
        description="Vehicle positions of the tram and bus network",
        theme="mobility",
        licence="proprietary",
        access_level="shared",
        keywords=["gtfs-rt", "bus"],
    )
    await make(
        "gas",
        lyon,
        title="Gas consumption per household",
        theme="energy",
        licence="proprietary",
        access_level="personal",
        subject_field="household",
        json_schema=PERSONAL_SCHEMA,
        keywords=["gaz"],
    )
    await make("air", lyon, title="Qualité de l'air: NO2 et particules", theme="environment")
    slug = {name: d["slug"] for name, d in made.items()}

    # Filters, alone and together.
    assert set(await _slugs(client, lyon, "theme=energy")) == {slug["elec"], slug["gas"]}
    assert await _slugs(client, lyon, "access_level=shared") == [slug["bus"]]
    assert await _slugs(client, lyon, f"publisher={tcl.org_id}") == [slug["bus"]]
    assert await _slugs(client, lyon, "keyword=LINKY") == [slug["elec"]]
    assert await _slugs(client, lyon, "theme=energy&access_level=personal") == [slug["gas"]]

    # Full text: French stemming, accent folding, English stemming, ranking.
    assert await _slugs(client, lyon, "q=consommations") == [slug["elec"]]
    assert await _slugs(client, lyon, "q=electricite") == [slug["elec"]]
    assert await _slugs(client, lyon, "q=turbidite") == [slug["water"]]
    assert await _slugs(client, lyon, "q=vehicles") == [slug["bus"]]
    assert await _slugs(client, lyon, "q=consumption") == [slug["gas"]]
    assert set(await _slugs(client, lyon, "q=qualité")) == {slug["water"], slug["air"]}
    # A title match ranks above a description match.
    assert (await _slugs(client, lyon, "q=bus"))[0] == slug["bus"]
    assert await _slugs(client, lyon, "q=eau&theme=water") == [slug["water"]]
    assert await _slugs(client, lyon, "q=nothing-like-this") == []

    # Cursor pagination: every dataset exactly once, in pages of two.
    seen: list[str] = []
    url: str | None = "/datasets?limit=2"
    pages = 0
    while url:
        page = await client.get(url, headers=lyon.publisher)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        seen += [d["slug"] for d in body["items"]]
        url = body["next"]
        pages += 1
        if url:
            assert "limit=2" in url
            assert f"cursor={body['next_cursor']}" in url
    assert sorted(seen) == sorted(slug.values())
    assert pages == 3
    # Pages of a search keep its order and filters.
    first = (await client.get("/datasets?q=qualite&limit=1", headers=lyon.publisher)).json()
    second = (await client.get(first["next"], headers=lyon.publisher)).json()
    assert {first["items"][0]["slug"], second["items"][0]["slug"]} == {slug["water"], slug["air"]}
    assert second["next"] is None

    problem(await client.get("/datasets?limit=101", headers=lyon.publisher), 422, "invalid-limit")
    problem(await client.get("/datasets?limit=0", headers=lyon.publisher), 422, "invalid-limit")
    problem(
        await client.get("/datasets?cursor=garbage", headers=lyon.publisher), 422, "invalid-cursor"
    )
    problem(await client.get("/datasets?theme=food", headers=lyon.publisher), 422, "unknown-theme")
    problem(
        await client.get("/datasets?access_level=secret", headers=lyon.publisher),
        422,
        "unknown-access-level",
    )
    problem(
        await client.get("/datasets?limit=ten", headers=lyon.publisher), 422, "validation-failed"
    )
    problem(await client.get("/datasets"), 401, "missing-api-key")


async def test_a_dataset_page_says_how_to_subscribe(catalog: CatalogApp) -> None:
    client = catalog.client
    producer = await catalog.organisation()
    consumer = await catalog.organisation()
    reader = await catalog.key(consumer.org_id, ["read"], headers=consumer.admin)
    open_data = await catalog.dataset(producer)
    personal = await catalog.dataset(
        producer,
        access_level="personal",
        licence="proprietary",
        subject_field="household",
        json_schema=PERSONAL_SCHEMA,
    )

    # Any key reads metadata, personal datasets' included (metadata is not data).
    page = await client.get(
        f"/datasets/{open_data['slug']}", headers={"Authorization": f"Bearer {reader}"}
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["json_schema"] == METER_SCHEMA
    assert body["stats"] is None
    subscribe = body["subscribe"]
    assert subscribe["topic"] == f"data.{open_data['slug']}"
    assert subscribe["direct_kafka_access"] is True
    assert subscribe["kafka_bootstrap_servers"] == catalog.settings.kafka.bootstrap_servers
    assert subscribe["consumer_group_hint"] == f"{consumer.org_id}.{open_data['slug']}"
    assert subscribe["ingest_url"].endswith(f"/datasets/{open_data['slug']}/records")
    assert subscribe["raw_topic"] == f"raw.{open_data['slug']}"
    assert subscribe["agreements_url"] is None

    personal_page = await client.get(
        f"/datasets/{personal['slug']}", headers={"Authorization": f"Bearer {reader}"}
    )
    assert personal_page.status_code == 200
    assert personal_page.json()["subscribe"]["direct_kafka_access"] is False
    assert personal_page.json()["subscribe"]["agreements_url"].endswith("/agreements")

    problem(
        await client.get("/datasets/no-such-dataset", headers=producer.publisher),
        404,
        "dataset-not-found",
    )
