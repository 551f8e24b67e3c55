"""Entitlement is decided at every attempt: a retry after the consumer lost
its agreement sends nothing, and records wait while the view is not current."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from datapolis_notify.deliveries import REPLAY
from datapolis_notify.delivery.engine import DeliveryEngine
from tests.integration.notify.delivery.conftest import (
    SETUP_WAIT_S,
    EngineFactory,
    Receiver,
    Scene,
    until_picked_up,
)
from tests.kafka_util import eventually


async def test_a_retry_after_the_agreement_ended_is_withheld_not_sent(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    scene.view.agreements[(scene.dataset_id, "org-consumer")] = ("agr-1", frozenset({"n"}))
    engine = await engine_for(retry_schedule_s=[0.5, 0.5, 0.5])
    receiver.answers["hook"] = [503, 200]
    sub = await scene.subscribe(url=receiver.url("hook"))
    await until_picked_up(engine, sub)
    await scene.produce([("k1", {"n": 1, "secret": "x"})])
    await eventually(lambda: receiver.seen.get("hook") == 1, timeout_s=SETUP_WAIT_S)
    # Revoked between the failed attempt and its retry.
    del scene.view.agreements[(scene.dataset_id, "org-consumer")]

    async def withheld() -> bool:
        rows = await scene.delivery(sub)
        return any(r["status"] == "withheld" for r in rows) and not await scene.queue(sub)

    await eventually(withheld, timeout_s=SETUP_WAIT_S)
    assert receiver.on("hook") == []
    assert receiver.seen["hook"] == 1
    rows = await scene.delivery(sub)
    assert "no-active-agreement" in " ".join(str(r["last_error"]) for r in rows)


async def test_records_wait_while_the_view_is_not_current_then_go(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    scene.view.agreements[(scene.dataset_id, "org-consumer")] = ("agr-1", frozenset({"n"}))
    engine = await engine_for()
    sub = await scene.subscribe(url=receiver.url("hook"))
    await until_picked_up(engine, sub)
    scene.view.current = False
    await scene.produce([("k1", {"n": 1}), ("k2", {"n": 2})])
    # Read and held, neither sent nor refused.
    await eventually(lambda: engine.held_records() > 0 or _in_flight(engine, sub), timeout_s=10)
    # A window in which a wrong engine would have sent or refused them.
    await asyncio.sleep(0.5)
    assert receiver.on("hook") == []
    assert [r for r in await scene.delivery(sub) if r["status"] == "withheld"] == []
    scene.view.current = True
    await eventually(lambda: len(receiver.records("hook")) == 2, timeout_s=SETUP_WAIT_S)


def _in_flight(engine: DeliveryEngine, subscription_id: str) -> bool:
    outlet = engine.outlets.get(subscription_id)
    return bool(outlet is not None and outlet.in_flight)


async def test_a_replayed_dead_letter_is_decided_again_and_keeps_its_id(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    scene.view.datasets[scene.dataset_id] = replace(
        scene.view.datasets[scene.dataset_id], access_level="personal"
    )
    scene.view.agreements[(scene.dataset_id, "org-consumer")] = ("agr-1", frozenset({"n"}))
    scene.view.consents[(scene.dataset_id, "org-consumer", "h-1")] = "con-1"
    scene.view.consents[(scene.dataset_id, "org-consumer", "h-2")] = "con-2"
    engine = await engine_for(retry_schedule_s=[0.1])
    receiver.answers["hook"] = [500]
    sub = await scene.subscribe(url=receiver.url("hook"), batch_max_records=1)
    await until_picked_up(engine, sub)
    await scene.produce(
        [("k1", {"n": 1, "household": "h-1"}), ("k2", {"n": 2, "household": "h-2"})]
    )

    async def both_dead() -> bool:
        rows = await scene.queue(sub)
        return len(rows) == 2 and all(r["state"] == "dead" for r in rows)

    await eventually(both_dead, timeout_s=SETUP_WAIT_S)
    dead_ids = {r["delivery_id"] for r in await scene.queue(sub)}
    # The second subject withdraws; then every dead letter is replayed.
    del scene.view.consents[(scene.dataset_id, "org-consumer", "h-2")]
    receiver.answers["hook"] = [200]
    await scene.pool.fetch(REPLAY, None, None, sub, None, None)

    async def settled() -> bool:
        return not await scene.queue(sub)

    await eventually(settled, timeout_s=SETUP_WAIT_S)
    assert [e["data"] for e in receiver.records("hook")] == [{"n": 1}]
    assert {h.message_id for h in receiver.on("hook")} <= dead_ids
    statuses = {r["delivery_id"]: r for r in await scene.delivery(sub)}
    delivered = [r for r in statuses.values() if r["status"] == "delivered"]
    withheld = [r for r in statuses.values() if r["status"] == "withheld"]
    assert [r["consent_ids"] for r in delivered] == [["con-1"]]
    assert any("no-active-consent" in str(r["last_error"]) for r in withheld)
