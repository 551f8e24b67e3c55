"""A catalog write holds one pooled connection for its transaction and does all
its reads on it: concurrent writes fit in a small pool instead of waiting
forever for a second connection that the other writers hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from datapolis_catalog.app import create_app
from datapolis_catalog.settings import CatalogSettings
from datapolis_shared.postgres.migrate import service_migrations
from datapolis_shared.settings import ServiceSettings
from tests.apps import running
from tests.integration.catalog.conftest import METER_SCHEMA, CatalogApp, delete_topics


@pytest.fixture
async def small_pool_catalog(service_settings: ServiceSettings) -> AsyncIterator[CatalogApp]:
    # Two connections: the outbox relay keeps one, requests share the other.
    postgres = service_settings.postgres.model_copy(update={"min_size": 1, "max_size": 2})
    settings = CatalogSettings(**{**dict(service_settings), "postgres": postgres})
    app = create_app(settings)
    async with running(app, migrations=service_migrations("datapolis_catalog")) as client:
        subject = CatalogApp(app, client, settings)
        try:
            yield subject
        finally:
            topics = [
                r["topic_name"]
                for r in await app.state.runtime.pool.fetch("SELECT topic_name FROM dataset_topics")
            ]
    await delete_topics(settings.kafka.bootstrap_servers, topics)


async def test_concurrent_repeated_writes_fit_a_pool_of_two(
    small_pool_catalog: CatalogApp,
) -> None:
    catalog = small_pool_catalog
    org = await catalog.organisation()
    dataset = await catalog.dataset(org)
    slug = dataset["slug"]

    async def unchanged_update() -> None:
        # Nothing changes: the answer is the dataset as it stands.
        answer = await catalog.client.patch(
            f"/datasets/{slug}", json={"title": dataset["title"]}, headers=org.publisher
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["title"] == dataset["title"]

    async def repeated_schema() -> None:
        # The current schema again: the current version, nothing created.
        answer = await catalog.client.post(
            f"/datasets/{slug}/schemas", json={"json_schema": METER_SCHEMA}, headers=org.publisher
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1

    async with asyncio.timeout(30):
        await asyncio.gather(
            *(unchanged_update() for _ in range(5)), *(repeated_schema() for _ in range(5))
        )
