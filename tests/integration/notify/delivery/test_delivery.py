"""Records of a dataset topic delivered to subscriptions by webhook and by
Kafka, filtered and projected, only while entitled, every delivery logged."""

from __future__ import annotations

import json
from dataclasses import replace

from aiokafka import AIOKafkaConsumer
from standardwebhooks import Webhook

from datapolis_notify.subscriptions import INSERT_TEST_DELIVERY, QUEUE_NOW
from tests.integration.catalog.conftest import delete_topics
from tests.integration.notify.delivery.conftest import (
    SECRET,
    SETUP_WAIT_S,
    EngineFactory,
    Receiver,
    Scene,
    until_picked_up,
)
from tests.kafka_util import eventually


async def test_a_webhook_receives_the_filtered_projected_records_and_the_log_says_on_what(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    scene.view.agreements[(scene.dataset_id, "org-consumer")] = (
        "agr-1",
        frozenset({"meter_id", "kwh", "district"}),
    )
    engine = await engine_for()
    # Asks for a field the agreement does not give (household): never sent.
    sub = await scene.subscribe(
        url=receiver.url("hook"),
        fields=["meter_id", "kwh", "household"],
        filter_={"district": "Centre"},
    )
    await until_picked_up(engine, sub)
    await scene.produce(
        [
            ("m-1", {"meter_id": "m-1", "kwh": 1.5, "household": "h-1", "district": "Centre"}),
            ("m-2", {"meter_id": "m-2", "kwh": 2.5, "household": "h-2", "district": "North"}),
            ("m-3", {"meter_id": "m-3", "kwh": 3.5, "household": "h-3", "district": "Centre"}),
        ]
    )
    await eventually(lambda: len(receiver.records("hook")) == 2, timeout_s=SETUP_WAIT_S)
    events = receiver.records("hook")
    assert sorted(e["data"]["meter_id"] for e in events) == ["m-1", "m-3"]
    for event in events:
        assert set(event["data"]) == {"meter_id", "kwh"}
        assert event["specversion"] == "1.0"
        assert event["type"] == "org.datapolis.test.record.v1"
        assert event["subject"] == event["data"]["meter_id"]
        assert event["id"].startswith("evt-")

    async def logged() -> bool:
        rows = await scene.delivery(sub)
        return sum(int(r["record_count"]) for r in rows if r["status"] == "delivered") == 2

    await eventually(logged, timeout_s=SETUP_WAIT_S)
    # Signed as Standard Webhooks' reference verifier expects.
    for hit in receiver.on("hook"):
        Webhook(SECRET).verify(hit.raw, hit.headers)
        assert hit.headers["Content-Type"] == "application/cloudevents-batch+json"
    rows = await scene.delivery(sub)
    assert {r["delivery_id"] for r in rows} == {h.message_id for h in receiver.on("hook")}
    for row in rows:
        assert row["agreement_ids"] == ["agr-1"]
        assert row["consumer_id"] == "org-consumer"
        assert row["publisher_id"] == "org-publisher"
        assert row["attempts"] == 1
    health = await scene.pool.fetchrow(
        "SELECT * FROM endpoint_health WHERE subscription_id = $1", sub
    )
    assert health is not None
    assert health["attempts"] >= 1
    assert health["failures"] == 0
    assert health["last_success_at"] is not None


async def test_a_record_the_consumer_is_not_entitled_to_is_withheld_and_logged(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    scene.view.datasets[scene.dataset_id] = replace(
        scene.view.datasets[scene.dataset_id], access_level="personal"
    )
    scene.view.agreements[(scene.dataset_id, "org-consumer")] = (
        "agr-1",
        frozenset({"meter_id", "kwh", "household"}),
    )
    scene.view.consents[(scene.dataset_id, "org-consumer", "h-1")] = "con-1"
    engine = await engine_for()
    sub = await scene.subscribe(url=receiver.url("hook"), purpose="billing")
    await until_picked_up(engine, sub)
    await scene.produce(
        [
            ("m-1", {"meter_id": "m-1", "kwh": 1.5, "household": "h-1"}),
            ("m-2", {"meter_id": "m-2", "kwh": 2.5, "household": "h-2"}),
        ]
    )

    async def both_logged() -> bool:
        rows = await scene.delivery(sub)
        return {r["status"] for r in rows} >= {"delivered", "withheld"}

    await eventually(both_logged, timeout_s=SETUP_WAIT_S)
    assert [e["data"]["household"] for e in receiver.records("hook")] == ["h-1"]
    rows = await scene.delivery(sub)
    withheld = [r for r in rows if r["status"] == "withheld"]
    assert len(withheld) == 1
    assert "no-active-consent" in withheld[0]["last_error"]
    delivered = [r for r in rows if r["status"] == "delivered"]
    assert delivered[0]["consent_ids"] == ["con-1"]
    assert delivered[0]["agreement_ids"] == ["agr-1"]


async def test_the_kafka_channel_writes_the_projected_records_keyed_to_the_consumer_topic(
    scene: Scene, engine_for: EngineFactory
) -> None:
    scene.view.agreements[(scene.dataset_id, "org-kafka")] = ("agr-2", frozenset({"kwh"}))
    engine = await engine_for()
    sub = await scene.subscribe(channel="kafka", consumer_id="org-kafka")
    await until_picked_up(engine, sub)
    await scene.produce(
        [(f"m-{i}", {"meter_id": f"m-{i}", "kwh": float(i), "household": "h"}) for i in range(5)]
    )
    topic = "deliver.org-kafka." + scene.topic.removeprefix("data.")

    async def logged() -> bool:
        rows = await scene.delivery(sub)
        return sum(int(r["record_count"]) for r in rows if r["status"] == "delivered") == 5

    await eventually(logged, timeout_s=SETUP_WAIT_S)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=scene.kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got: list[tuple[bytes, object]] = []

        async def read() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            got.extend((r.key, json.loads(r.value)) for rs in batches.values() for r in rs)
            return bool(len(got) >= 5)

        await eventually(read, timeout_s=SETUP_WAIT_S)
        partitions = consumer.partitions_for_topic(topic)
    finally:
        await consumer.stop()
    assert sorted(got, key=lambda kv: kv[0]) == [
        (f"m-{i}".encode(), {"kwh": float(i)}) for i in range(5)
    ]
    assert partitions is not None
    assert len(partitions) == 3  # as many as the data topic
    await delete_topics(scene.kafka.bootstrap_servers, [topic])


async def test_a_queued_notification_is_sent_as_one_signed_cloud_event(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    engine = await engine_for()
    sub = await scene.subscribe(url=receiver.url("hook"), dataset=False)
    await until_picked_up(engine, sub)
    event = {
        "specversion": "1.0",
        "id": "msg_test1",
        "source": "/notify",
        "type": "org.datapolis.notify.test.v1",
        "data": {"subscription_id": sub},
    }
    # As the API queues a test notification.
    await scene.pool.execute(
        INSERT_TEST_DELIVERY, "msg_test1", sub, "org-consumer", "webhook", event["type"]
    )
    await scene.pool.execute(QUEUE_NOW, "msg_test1", sub, json.dumps(event))
    await eventually(lambda: len(receiver.on("hook")) == 1, timeout_s=SETUP_WAIT_S)
    [hit] = receiver.on("hook")
    assert hit.body == event
    assert hit.message_id == "msg_test1"
    assert hit.headers["Content-Type"] == "application/cloudevents+json"
    Webhook(SECRET).verify(hit.raw, hit.headers)

    async def logged() -> bool:
        [row] = await scene.delivery(sub)
        return bool(row["status"] == "delivered")

    await eventually(logged, timeout_s=SETUP_WAIT_S)
    assert not await scene.queue(sub)


async def test_a_notification_to_a_kafka_subscription_lands_on_its_topic(
    scene: Scene, engine_for: EngineFactory
) -> None:
    engine = await engine_for()
    sub = await scene.subscribe(channel="kafka", consumer_id="org-kafka")
    await until_picked_up(engine, sub)
    event = {"specversion": "1.0", "id": "msg_k1", "source": "/notify", "type": "t.v1"}
    await scene.pool.execute(INSERT_TEST_DELIVERY, "msg_k1", sub, "org-kafka", "kafka", "t.v1")
    await scene.pool.execute(QUEUE_NOW, "msg_k1", sub, json.dumps(event))
    topic = "deliver.org-kafka." + scene.topic.removeprefix("data.")

    async def delivered() -> bool:
        [row] = await scene.delivery(sub)
        return bool(row["status"] == "delivered")

    await eventually(delivered, timeout_s=SETUP_WAIT_S)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=scene.kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got: list[object] = []

        async def read() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            got.extend(json.loads(r.value) for rs in batches.values() for r in rs)
            return bool(got)

        await eventually(read, timeout_s=SETUP_WAIT_S)
    finally:
        await consumer.stop()
    assert got == [event]
    await delete_topics(scene.kafka.bootstrap_servers, [topic])
