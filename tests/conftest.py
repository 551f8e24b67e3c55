"""Fixtures shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trustme
from aiokafka.admin import AIOKafkaAdminClient
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from datapolis_shared.kafka import Producer, TopicSpec, control_topic_specs, ensure_topics
from datapolis_shared.postgres.migrate import apply, load
from datapolis_shared.postgres.pool import Pool
from datapolis_shared.settings import KafkaSettings, PostgresSettings, ServiceSettings
from tests import infra
from tests.kafka_util import TopicTail


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


class PrivateKafka:
    """A Kafka broker of the test's own, on its own ports and storage, that the
    test may stop and restart without disturbing the shared broker."""

    def __init__(self, state_dir: str, **env: str) -> None:
        self.port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "DATAPOLIS_STATE_DIR": state_dir,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(_free_port()),
            **env,
        }

    async def _run(self, command: str) -> None:
        process = await asyncio.create_subprocess_exec(
            str(infra.REPO / "deploy/local/kafka.sh"),
            command,
            env=self._env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"kafka.sh {command} failed:\n{output.decode()[-3000:]}")

    async def start(self) -> None:
        await self._run("start")

    async def stop(self) -> None:
        await self._run("stop")


class SaslKafka(PrivateKafka):
    """A private broker that also listens as production's brokers do: SASL_SSL
    with SCRAM-SHA-512, under a certificate of a CA made for the test (the
    broker's PLAINTEXT port is there only for kafka.sh's readiness probe)."""

    USER = "datapolis-test"
    PASSWORD = "s3cret-scram-password"

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        # Kafka's PEM key store wants the key as PKCS#8, then the chain.
        key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
        keystore = state_dir / "broker.pem"
        keystore.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            + b"".join(blob.bytes() for blob in issued.cert_chain_pems)
        )
        self.cafile = str(state_dir / "ca.pem")
        ca.cert_pem.write_to_path(self.cafile)
        self.sasl_port = _free_port()
        super().__init__(
            str(state_dir / "kafka"),
            KAFKA_SASL_SSL_PORT=str(self.sasl_port),
            KAFKA_SSL_KEYSTORE_PEM=str(keystore),
            KAFKA_SCRAM_USERS=f"{self.USER}={self.PASSWORD}",
        )

    def settings(self, *, password: str | None = None, **overrides: Any) -> KafkaSettings:
        """Client settings for the SASL_SSL listener, as production sets them."""
        values: dict[str, Any] = {
            "bootstrap_servers": f"127.0.0.1:{self.sasl_port}",
            "security_protocol": "SASL_SSL",
            "ssl_cafile": self.cafile,
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": self.USER,
            "sasl_password": SecretStr(password or self.PASSWORD),
        }
        return KafkaSettings.model_validate({**values, **overrides})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def private_kafka(tmp_path: Path) -> AsyncIterator[PrivateKafka]:
    broker = PrivateKafka(str(tmp_path / "state"))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture(scope="module")
async def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SaslKafka]:
    """One SASL_SSL broker for a module's tests (it takes seconds to start)."""
    broker = SaslKafka(tmp_path_factory.mktemp("sasl-kafka"))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


# What a test adds to the shared topics, read from positions taken before it
# acts (a long-lived broker may hold millions of earlier records there).
@pytest.fixture
async def dead_letters_tail(kafka_bootstrap: str, control_topics: None) -> TopicTail:
    return await TopicTail.at_end(kafka_bootstrap, "datapolis.deadletters")


@pytest.fixture
async def ingest_rejected_tail(kafka_bootstrap: str, control_topics: None) -> TopicTail:
    return await TopicTail.at_end(kafka_bootstrap, "datapolis.ingest.rejected")


@pytest.fixture
async def ingest_events_tail(kafka_bootstrap: str, control_topics: None) -> TopicTail:
    return await TopicTail.at_end(kafka_bootstrap, "datapolis.ingest.events")
