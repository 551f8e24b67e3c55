"""Every Kafka client of the project reaches a broker that requires what
production's brokers require (SASL_SSL, SCRAM-SHA-512, a private CA), from
one ``KafkaSettings``: the producer, a consumer loop, the admin client and a
faust app built by the shared factory. With a wrong password or an untrusted
certificate each one is refused promptly and says so, none of them hangs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from datapolis_shared.errors import Unavailable
from datapolis_shared.kafka import ConsumerLoop, OutgoingRecord, Producer, TopicSpec, ensure_topics
from datapolis_shared.kafka.options import client_options
from datapolis_shared.settings import KafkaSettings
from tests.conftest import SaslKafka
from tests.kafka_util import eventually

# A refused client must say so within this; the clients' request timeout is 10 s.
REFUSED_WITHIN_S = 30


async def test_producer_consumer_loop_and_admin_work_over_sasl_ssl(sasl_kafka: SaslKafka) -> None:
    settings = sasl_kafka.settings()
    topic = f"secure.{uuid.uuid4().hex[:8]}"
    assert await ensure_topics(settings, [TopicSpec(topic, 2)]) == [topic]

    producer = Producer(settings, client_id="sasl-test")
    await producer.start()
    seen: list[bytes] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        seen.append(record.value or b"")

    loop = ConsumerLoop(
        settings,
        name="secure",
        group_id=f"g-{topic}",
        topics=[topic],
        handler=handle,
        producer=producer,
    )
    loop.start()
    try:
        sent = [f"r{i}".encode() for i in range(10)]
        await producer.send_many([OutgoingRecord(topic, v, v) for v in sent])
        await eventually(lambda: len(seen) == len(sent), timeout_s=30)
        assert sorted(seen) == sorted(sent)
        assert loop.problem() is None
    finally:
        await loop.stop()
        await producer.stop()


async def test_a_wrong_password_is_refused_promptly_by_every_client(
    sasl_kafka: SaslKafka, caplog: pytest.LogCaptureFixture
) -> None:
    settings = sasl_kafka.settings(password="not-the-password")

    with pytest.raises(Unavailable):
        await asyncio.wait_for(
            ensure_topics(settings, [TopicSpec("never.created")]), REFUSED_WITHIN_S
        )
    # The log says the broker refused the user, and which cluster and user,
    # so an operator knows what to fix; never the password.
    assert "SaslAuthenticationFailed" in caplog.text
    assert f"SCRAM-SHA-512 as {SaslKafka.USER}" in caplog.text
    assert "not-the-password" not in caplog.text

    producer = Producer(settings, client_id="sasl-test")
    with pytest.raises(Unavailable):
        await asyncio.wait_for(producer.start(), REFUSED_WITHIN_S)

    # A consumer loop keeps trying (the password may be rotated back), and its
    # readiness says why it cannot consume.
    loop = ConsumerLoop(
        settings,
        name="refused",
        group_id="g-refused",
        topics=["never.created"],
        handler=_never_called,
        producer=producer,
    )
    loop.start()
    try:
        await eventually(
            lambda: "cannot connect to Kafka" in (loop.problem() or ""), timeout_s=REFUSED_WITHIN_S
        )
    finally:
        await loop.stop()


async def test_a_broker_certificate_from_another_ca_is_refused(
    sasl_kafka: SaslKafka, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    settings = sasl_kafka.settings(ssl_cafile=str(other_ca))
    with pytest.raises(Unavailable):
        await asyncio.wait_for(ensure_topics(settings, [TopicSpec("never.created")]), 30)


async def test_a_faust_app_consumes_and_produces_over_sasl_ssl(
    sasl_kafka: SaslKafka, tmp_path: Path
) -> None:
    settings = sasl_kafka.settings()
    source, sink = f"relay-in.{uuid.uuid4().hex[:8]}", f"relay-out.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [TopicSpec(source, 1), TopicSpec(sink, 1)])
    producer = Producer(settings, client_id="sasl-test")
    await producer.start()
    try:
        sent = [f"event-{i}".encode() for i in range(5)]
        await producer.send_many([OutgoingRecord(source, v, v) for v in sent])
    finally:
        await producer.stop()

    async with _relay(settings, source, sink, tmp_path, "relay-ok") as (process, log):
        relayed = await _read_until(settings, sink, len(sent), process, log)
    assert sorted(r.value for r in relayed) == sorted(sent)


async def test_a_faust_app_with_a_wrong_password_stops_and_says_why(
    sasl_kafka: SaslKafka, tmp_path: Path
) -> None:
    settings = sasl_kafka.settings(password="not-the-password")
    async with _relay(settings, "relay-in", "relay-out", tmp_path, "relay-refused") as (
        process,
        log,
    ):
        try:
            code = await asyncio.wait_for(process.wait(), REFUSED_WITHIN_S)
        except TimeoutError:
            raise AssertionError(
                f"the worker still runs after {REFUSED_WITHIN_S}s; log:\n{log.read_text()[-3000:]}"
            ) from None
    assert code != 0
    assert "SaslAuthenticationFailed" in log.read_text()


async def _never_called(record: ConsumerRecord[bytes, bytes]) -> None:
    raise AssertionError("no record can be consumed without authenticating")


@contextlib.asynccontextmanager
async def _relay(
    settings: KafkaSettings, source: str, sink: str, tmp_path: Path, name: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """tests/integration/faust_relay.py as its own process, with ``settings``
    passed as a service's environment passes them."""
    env = {
        **os.environ,
        "RELAY_LOG_JSON": "false",
        "RELAY_APP_ID": f"{name}-{uuid.uuid4().hex[:6]}",
        "RELAY_DATA_DIR": str(tmp_path / name),
        "RELAY_SOURCE": source,
        "RELAY_SINK": sink,
        "RELAY_KAFKA__BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "RELAY_KAFKA__SECURITY_PROTOCOL": settings.security_protocol,
        "RELAY_KAFKA__SSL_CAFILE": settings.ssl_cafile or "",
        "RELAY_KAFKA__SASL_MECHANISM": settings.sasl_mechanism or "",
        "RELAY_KAFKA__SASL_USERNAME": settings.sasl_username or "",
        "RELAY_KAFKA__SASL_PASSWORD": (
            settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        ),
    }
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.faust_relay",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, log
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _read_until(
    settings: KafkaSettings,
    topic: str,
    expect: int,
    process: asyncio.subprocess.Process,
    log: Path,
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, **client_options(settings), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(records) < expect:
            if time.monotonic() > deadline or process.returncode is not None:
                raise AssertionError(
                    f"{len(records)} of {expect} records relayed; worker exit code "
                    f"{process.returncode}; log:\n{log.read_text()[-3000:]}"
                )
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records
