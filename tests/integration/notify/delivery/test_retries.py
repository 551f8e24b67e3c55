"""A failing endpoint is retried from the durable queue in key order, a dead
one holds back nobody else, retries end in the dead letters, 410 and steady
failure disable the endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.integration.notify.delivery.conftest import (
    SETUP_WAIT_S,
    EngineFactory,
    Receiver,
    Scene,
    until_picked_up,
)
from tests.kafka_util import eventually


def by_key(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for event in events:
        seen.setdefault(event["subject"], []).append(event["data"]["n"])
    return seen


def open_dataset(scene: Scene) -> None:
    from dataclasses import replace

    scene.view.datasets[scene.dataset_id] = replace(
        scene.view.datasets[scene.dataset_id], access_level="open"
    )


async def test_a_failing_endpoint_gets_every_record_in_key_order_and_a_healthy_one_is_unaffected(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    open_dataset(scene)
    engine = await engine_for()
    # Fails its first three requests, then recovers.
    receiver.answers["flaky"] = [503, 503, 503, 200]
    flaky = await scene.subscribe(url=receiver.url("flaky"), batch_max_records=3)
    healthy = await scene.subscribe(url=receiver.url("healthy"), batch_max_records=3)
    await until_picked_up(engine, flaky)
    await until_picked_up(engine, healthy)
    keys = [f"k{i}" for i in range(4)]
    for n in range(10):
        await scene.produce([(key, {"n": n}) for key in keys])
    await eventually(lambda: len(receiver.records("healthy")) == 40, timeout_s=SETUP_WAIT_S)
    await eventually(lambda: len(receiver.records("flaky")) >= 40, timeout_s=SETUP_WAIT_S)
    expected = {key: list(range(10)) for key in keys}
    assert by_key(receiver.records("healthy")) == expected
    # Each key in order, with no record lost (at least once: no duplicates
    # either, since a failed request was not received).
    assert by_key(receiver.records("flaky")) == expected

    async def queue_empty() -> bool:
        return not await scene.queue(flaky)

    await eventually(queue_empty, timeout_s=SETUP_WAIT_S)
    health = await scene.pool.fetchrow(
        "SELECT * FROM endpoint_health WHERE subscription_id = $1", flaky
    )
    assert health is not None
    assert health["failures"] == 3
    assert health["consecutive_failures"] == 0
    assert health["failing_since"] is None


async def test_a_dead_endpoint_does_not_slow_a_healthy_one(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    open_dataset(scene)
    engine = await engine_for(sender_timeout_s=60.0)
    receiver.hang.add("dead")
    dead = await scene.subscribe(url=receiver.url("dead"), batch_max_records=1)
    healthy = await scene.subscribe(url=receiver.url("healthy"), batch_max_records=1)
    await until_picked_up(engine, dead)
    await until_picked_up(engine, healthy)
    started = time.monotonic()
    await scene.produce([(f"k{i}", {"n": i}) for i in range(50)])
    # Every request to the dead endpoint hangs for a minute; the healthy one
    # still gets all 50 within seconds.
    await eventually(lambda: len(receiver.records("healthy")) == 50, timeout_s=20)
    assert time.monotonic() - started < 20
    assert receiver.on("dead") == []


async def test_an_endpoint_too_slow_for_its_records_sends_them_through_the_queue(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    open_dataset(scene)
    engine = await engine_for(
        sender_timeout_s=60.0, max_held_per_endpoint=20, max_in_flight_per_endpoint=2
    )
    receiver.hang.add("dead")
    dead = await scene.subscribe(url=receiver.url("dead"), batch_max_records=1)
    healthy = await scene.subscribe(url=receiver.url("healthy"), batch_max_records=5)
    await until_picked_up(engine, dead)
    await until_picked_up(engine, healthy)
    await scene.produce([(f"k{i}", {"n": i}) for i in range(300)])
    await eventually(lambda: len(receiver.records("healthy")) == 300, timeout_s=20)
    # The hanging endpoint holds at most its bound in memory: the rest of its
    # records are durably queued (so their offsets can be committed).
    outlet = engine.outlets[dead]
    assert outlet.waiting_count + len(outlet.buffer) + outlet.in_flight_records <= 20

    async def queued() -> bool:
        rows = await scene.queue(dead)
        return sum(len(json.loads(r["payload"])) for r in rows) >= 300 - 20 - 2

    await eventually(queued, timeout_s=SETUP_WAIT_S)


async def test_a_message_whose_retries_are_exhausted_is_dead(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    open_dataset(scene)
    engine = await engine_for(retry_schedule_s=[0.1, 0.1])
    receiver.answers["down"] = [500]
    sub = await scene.subscribe(url=receiver.url("down"))
    await until_picked_up(engine, sub)
    await scene.produce([("k1", {"n": 1})])

    async def dead() -> bool:
        rows = await scene.queue(sub)
        return len(rows) == 1 and rows[0]["state"] == "dead"

    await eventually(dead, timeout_s=SETUP_WAIT_S)
    [row] = await scene.delivery(sub)
    assert row["status"] == "dead"
    assert row["attempts"] == 3  # the first attempt and two retries
    assert row["last_status"] == 500
    assert receiver.seen["down"] == 3
    # Counted for the webhook failure and dead-letter alerts.
    registry = engine.metrics.registry
    assert registry is not None
    sample = registry.get_sample_value
    labels = {"channel": "webhook"}
    assert sample("datapolis_notify_deliveries_total", {**labels, "outcome": "retry"}) == 3
    assert sample("datapolis_notify_deliveries_total", {**labels, "outcome": "dead"}) == 1
    assert sample("datapolis_notify_deliveries_total", {**labels, "outcome": "delivered"}) == 0
    # The dead message keeps the record as read, for a replay.
    [queued] = await scene.queue(sub)
    payload = json.loads(queued["payload"])
    assert payload[0]["value"] == {"n": 1}
    assert payload[0]["topic"] == scene.topic


async def test_an_endpoint_answering_410_is_disabled(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    open_dataset(scene)
    engine = await engine_for()
    receiver.answers["gone"] = [410]
    sub = await scene.subscribe(url=receiver.url("gone"))
    await until_picked_up(engine, sub)
    await scene.produce([("k1", {"n": 1})])

    async def disabled() -> bool:
        status = await scene.pool.fetchval(
            "SELECT status FROM subscriptions WHERE subscription_id = $1", sub
        )
        return bool(status == "disabled")

    await eventually(disabled, timeout_s=SETUP_WAIT_S)
    reason = await scene.pool.fetchval(
        "SELECT disabled_reason FROM subscriptions WHERE subscription_id = $1", sub
    )
    assert "410" in reason
    await eventually(lambda: sub not in engine.outlets, timeout_s=SETUP_WAIT_S)
    await scene.produce([("k1", {"n": 2})])
    await asyncio.sleep(0)  # nothing more is sent to it (checked below)
    assert receiver.seen["gone"] == 1


async def test_an_endpoint_failing_steadily_is_disabled_and_its_owner_told(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    open_dataset(scene)
    engine = await engine_for(disable_after_s=1.0, retry_schedule_s=[0.3] * 50)
    receiver.answers["failing"] = [500]
    sub = await scene.subscribe(url=receiver.url("failing"))
    owner_hook = await scene.subscribe(
        url=receiver.url("owner"), notifications=["endpoint"], dataset=False
    )
    await until_picked_up(engine, sub)
    await until_picked_up(engine, owner_hook)
    await scene.produce([("k1", {"n": 1})])

    async def disabled() -> bool:
        status = await scene.pool.fetchval(
            "SELECT status FROM subscriptions WHERE subscription_id = $1", sub
        )
        return bool(status == "disabled")

    await eventually(disabled, timeout_s=SETUP_WAIT_S)
    await eventually(lambda: len(receiver.on("owner")) == 1, timeout_s=SETUP_WAIT_S)
    notice = receiver.on("owner")[0].body
    assert notice["type"] == "org.datapolis.notify.endpoint.disabled.v1"
    assert notice["data"]["subscription_id"] == sub


async def test_the_waiting_messages_of_an_endpoint_its_owner_disabled_end_dead(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    open_dataset(scene)
    engine = await engine_for(retry_schedule_s=[0.5] * 20)
    receiver.answers["paused"] = [503]
    sub = await scene.subscribe(url=receiver.url("paused"))
    await until_picked_up(engine, sub)
    await scene.produce([("k1", {"n": 1})])

    async def waiting() -> bool:
        rows = await scene.queue(sub)
        return len(rows) == 1 and rows[0]["state"] == "waiting"

    await eventually(waiting, timeout_s=SETUP_WAIT_S)
    # As PATCH {"status": "disabled"} does.
    await scene.pool.execute(
        "UPDATE subscriptions SET status = 'disabled' WHERE subscription_id = $1", sub
    )

    async def dead() -> bool:
        rows = await scene.queue(sub)
        return len(rows) == 1 and rows[0]["state"] == "dead"

    await eventually(dead, timeout_s=SETUP_WAIT_S)
    [row] = await scene.delivery(sub)
    assert row["status"] == "dead"
