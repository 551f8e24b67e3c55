"""The notify worker as deployed (``python -m datapolis_notify worker``),
its view fed by catalog's and consent's events: a shared dataset's records
reach the consumer's webhook projected to the agreed fields, and stop once
the agreement is revoked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from datapolis_shared.events.base import Event
from datapolis_shared.events.catalog import DatasetRegistered
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.events.consent import AgreementGranted, AgreementRevoked
from datapolis_shared.kafka import OutgoingRecord, Producer
from tests.conftest import TopicFactory
from tests.integration.notify.delivery.conftest import SETUP_WAIT_S, Receiver, Scene
from tests.integration.notify.delivery.test_crash import ROOT, free_port
from tests.kafka_util import eventually

PURPOSE = "dpv:ScientificResearch"


async def publish(producer: Producer, topic: str, event: Event) -> None:
    """As catalog and consent publish it, on the test's own topic."""
    value, headers = to_structured(event.to_cloudevent())
    await producer.send_many([OutgoingRecord(topic, value, event.key().encode(), headers)])


@pytest.fixture
async def event_topics(new_topic: TopicFactory) -> tuple[str, str]:
    return await new_topic("catalog-events"), await new_topic("consent-events")


@pytest.fixture
def worker(
    scene: Scene, event_topics: tuple[str, str], database_url: str, schema: str
) -> Iterator[subprocess.Popen[bytes]]:
    catalog_topic, consent_topic = event_topics
    env = {
        **os.environ,
        "NOTIFY_DEV": "true",
        "NOTIFY_LOG_JSON": "false",
        "NOTIFY_SERVICE_NAME": f"notify{uuid.uuid4().hex[:6]}",
        "NOTIFY_POSTGRES__DSN": database_url,
        "NOTIFY_POSTGRES__DB_SCHEMA": schema,
        "NOTIFY_KAFKA__BOOTSTRAP_SERVERS": scene.kafka.bootstrap_servers,
        "NOTIFY_ENTITLEMENTS__CATALOG_EVENTS_TOPIC": catalog_topic,
        "NOTIFY_ENTITLEMENTS__CONSENT_EVENTS_TOPIC": consent_topic,
        "NOTIFY_DELIVERY__TOPIC_PATTERN": "^" + scene.topic.replace(".", r"\.") + "$",
        "NOTIFY_DELIVERY__GROUP_ID": f"notify.delivery.{uuid.uuid4().hex[:8]}",
        "NOTIFY_DELIVERY__SUBSCRIPTION_REFRESH_S": "0.2",
        "NOTIFY_WEBHOOKS__ALLOW_TARGETS": '["127.0.0.0/8"]',
        "NOTIFY_WORKER_HTTP__PORT": str(free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "datapolis_notify", "worker"], env=env, cwd=ROOT
    )
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def test_the_worker_delivers_while_the_agreement_holds_and_stops_after_a_revoke(
    scene: Scene,
    receiver: Receiver,
    event_topics: tuple[str, str],
    producer: Producer,
    worker: subprocess.Popen[bytes],
) -> None:
    catalog_topic, consent_topic = event_topics
    now = datetime.now(UTC)
    registered = DatasetRegistered(
        dataset_id=scene.dataset_id,
        slug=scene.dataset_id,
        publisher_id="org-publisher",
        access_level="shared",
        topic_name=scene.topic,
    )
    granted = AgreementGranted(
        agreement_id=f"agr-{uuid.uuid4().hex[:8]}",
        dataset_id=scene.dataset_id,
        publisher_org_id="org-publisher",
        consumer_org_id="org-consumer",
        ledger_sequence=1,
        ledger_hash="h1",
        occurred_at=now,
        purposes=[PURPOSE],
        fields=["kwh"],
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(days=1),
    )
    await publish(producer, catalog_topic, registered)
    await publish(producer, consent_topic, granted)
    sub = await scene.subscribe(url=receiver.url("hook"), purpose=PURPOSE)

    async def agreed() -> bool:
        status = await scene.pool.fetchval(
            "SELECT status FROM agreements WHERE agreement_id = $1", granted.agreement_id
        )
        return bool(status == "granted")

    await eventually(agreed, timeout_s=SETUP_WAIT_S)

    # Whether the worker has picked up the subscription and its view the
    # agreement: a probe record, sent until one arrives.
    async def probe_arrived() -> bool:
        await scene.produce([("probe", {"kwh": 0.0, "meter_id": "probe"})])
        return bool(receiver.records("hook"))

    await eventually(probe_arrived, timeout_s=SETUP_WAIT_S, interval_s=0.5)
    await scene.produce([("m-1", {"kwh": 1.5, "meter_id": "m-1"})])
    await eventually(
        lambda: any(e["subject"] == "m-1" for e in receiver.records("hook")),
        timeout_s=SETUP_WAIT_S,
    )
    assert all(set(e["data"]) == {"kwh"} for e in receiver.records("hook"))

    revoked = AgreementRevoked(
        agreement_id=granted.agreement_id,
        dataset_id=scene.dataset_id,
        publisher_org_id="org-publisher",
        consumer_org_id="org-consumer",
        ledger_sequence=2,
        ledger_hash="h2",
        occurred_at=datetime.now(UTC),
        reason="ended",
    )
    await publish(producer, consent_topic, revoked)

    async def withheld() -> bool:
        await scene.produce([("m-2", {"kwh": 2.5, "meter_id": "m-2"})])
        rows = await scene.delivery(sub)
        return any(
            r["status"] == "withheld" and "no-active-agreement" in str(r["last_error"])
            for r in rows
        )

    await eventually(withheld, timeout_s=SETUP_WAIT_S, interval_s=0.5)
    delivered_before = len(receiver.records("hook"))
    await scene.produce([("m-3", {"kwh": 3.5, "meter_id": "m-3"})])

    async def m3_logged() -> bool:
        rows = await scene.delivery(sub)
        return sum(int(r["record_count"]) for r in rows) >= delivered_before + 2

    await eventually(m3_logged, timeout_s=SETUP_WAIT_S)
    assert not any(e["subject"] in {"m-2", "m-3"} for e in receiver.records("hook"))
