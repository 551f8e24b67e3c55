"""Fixtures shared by the integration and end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from datapolis_shared.kafka import Producer, TopicSpec, control_topic_specs, ensure_topics
from datapolis_shared.postgres.migrate import apply, load
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import KafkaSettings, PostgresSettings, ServiceSettings
from tests import infra


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    try:
        with infra.kafka_bootstrap() as servers:
            yield servers
    except infra.MissingInfrastructure as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    try:
        with infra.database_url() as url:
            yield url
    except infra.MissingInfrastructure as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
async def control_topics(kafka_bootstrap: str) -> None:
    """The datapolis.* topics every service provisions when it starts."""
    await ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), control_topic_specs())


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, control_topics: None) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, delivery_timeout_s=10)


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    """A schema of this test's own, with the shared migrations applied."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    await apply(database_url, name, load("datapolis_shared.postgres", prefix="shared"))
    yield name
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def postgres_settings(database_url: str, schema: str) -> PostgresSettings:
    return PostgresSettings(dsn=SecretStr(database_url), db_schema=schema, max_size=5)


@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[Pool]:
    pg = await asyncpg.create_pool(
        database_url, min_size=1, max_size=5, server_settings={"search_path": schema}
    )
    yield pg
    await pg.close()


@pytest.fixture
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[Producer]:
    p = Producer(kafka_settings, client_id="tests")
    await p.start()
    yield p
    await p.stop()


TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def new_topic(kafka_settings: KafkaSettings) -> AsyncIterator[TopicFactory]:
    """Creates topics with unique names; deletes them after the test."""
    created: list[str] = []

    async def make(prefix: str = "test", partitions: int = 1) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        await ensure_topics(kafka_settings, [TopicSpec(name, partitions)])
        created.append(name)
        return name

    yield make
    if created:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics(created)
        finally:
            await admin.close()


@pytest.fixture
def service_settings(
    kafka_settings: KafkaSettings, postgres_settings: PostgresSettings
) -> ServiceSettings:
    return ServiceSettings(
        service_name=f"svc{uuid.uuid4().hex[:6]}",
        dev=True,
        kafka=kafka_settings,
        postgres=postgres_settings,
        log_json=False,
    )
