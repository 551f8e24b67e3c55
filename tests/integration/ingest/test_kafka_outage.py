"""Stopping Kafka mid-load: 503s with Retry-After while it is down, never a
2xx for records Kafka did not acknowledge, and after the restart every record
of every acknowledged batch is on the topic."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson

from datapolis_shared.kafka import Producer, TopicSpec, control_topic_specs, ensure_topics
from datapolis_shared.settings import KafkaSettings
from tests.conftest import PrivateKafka
from tests.integration.ingest.conftest import (
    METER_SCHEMA,
    IngestFactory,
    issue_key,
    reading,
    until_key_works,
    until_known,
)
from tests.kafka_util import read_topic

BATCH = 50
CLIENTS = 4


async def test_kafka_stopped_mid_load_loses_no_acknowledged_record(
    private_kafka: PrivateKafka, start_ingest: IngestFactory
) -> None:
    from datapolis_shared.events.catalog import DatasetRegistered, SchemaVersionAdded

    kafka = KafkaSettings(bootstrap_servers=private_kafka.bootstrap, delivery_timeout_s=3)
    slug = f"outage-{uuid.uuid4().hex[:8]}"
    topic = f"data.{slug}"
    await ensure_topics(kafka, [*control_topic_specs(), TopicSpec(topic, 3)])
    catalog = Producer(kafka, client_id="test-catalog")
    await catalog.start()
    try:
        publisher = await issue_key(catalog, "org-outage", ["ingest"])
        await catalog.send_event(
            DatasetRegistered(
                dataset_id=f"ds-{slug}",
                slug=slug,
                publisher_id="org-outage",
                access_level="open",
                key_field_name="meter_id",
                topic_name=topic,
            )
        )
        await catalog.send_event(
            SchemaVersionAdded(
                dataset_id=f"ds-{slug}",
                slug=slug,
                version=1,
                major=1,
                topic_name=topic,
                json_schema=METER_SCHEMA,
            )
        )
    finally:
        await catalog.stop()
    ingest = await start_ingest(kafka=kafka)
    await until_known(ingest, slug, version=1)
    await until_key_works(ingest, publisher)

    acknowledged: set[str] = set()
    statuses: list[int] = []
    retry_after: set[str] = set()
    phase = {"restarted": False, "ok_after_restart": 0}
    stop_load, refused, recovered = asyncio.Event(), asyncio.Event(), asyncio.Event()
    last_error: dict[str, str] = {}

    async def client() -> None:
        while not stop_load.is_set():
            batch = [reading(i) for i in range(BATCH)]
            response = await ingest.client.post(
                f"/datasets/{slug}/records", json=batch, headers=publisher.headers
            )
            statuses.append(response.status_code)
            if response.is_success:
                answer: dict[str, Any] = response.json()
                assert answer["accepted"] == BATCH
                acknowledged.update(r["id"] for r in batch)
                if phase["restarted"]:
                    phase["ok_after_restart"] += 1
                    if phase["ok_after_restart"] >= 10:
                        recovered.set()
            else:
                last_error["text"] = response.text
                assert response.status_code in (429, 503), response.text
                assert response.headers["content-type"] == "application/problem+json"
                retry_after.add(response.headers["retry-after"])
                if response.status_code == 503:
                    refused.set()
                await asyncio.sleep(0.2)

    clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    try:
        await asyncio.sleep(2)
        before = len(acknowledged)
        assert before > 0
        await private_kafka.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(refused.wait(), timeout=15)
        await asyncio.sleep(1)
        await private_kafka.start()
        phase["restarted"] = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recovered.wait(), timeout=45)
    finally:
        stop_load.set()
        await asyncio.gather(*clients, return_exceptions=True)

    assert 503 in statuses, "no 503 while Kafka was down"
    assert retry_after
    assert all(v.isdigit() for v in retry_after)
    assert phase["ok_after_restart"] >= 10, (
        f"no recovery after Kafka came back: {statuses[-10:]} {last_error}"
    )

    records = await read_topic(
        private_kafka.bootstrap, topic, expect=len(acknowledged), timeout_s=30
    )
    on_topic = {orjson.loads(r.value)["id"] for r in records}
    missing = acknowledged - on_topic
    assert not missing, f"{len(missing)} acknowledged record(s) missing of {len(acknowledged)}"
    print(
        f"{len(acknowledged)} acknowledged, {len(records)} on topic, "
        f"statuses: { {s: statuses.count(s) for s in set(statuses)} }"
    )
