"""An endpoint a little slower than its records: while every message slot
is taken, its records gather into the next message instead of queueing one
small message each behind the others."""

from __future__ import annotations

import asyncio

from tests.integration.notify.delivery.conftest import (
    SETUP_WAIT_S,
    EngineFactory,
    Receiver,
    Scene,
    until_picked_up,
)
from tests.kafka_util import eventually

RECORDS = 20


async def test_records_waiting_for_a_busy_endpoint_leave_together_in_the_next_message(
    scene: Scene, engine_for: EngineFactory, receiver: Receiver
) -> None:
    scene.view.agreements[(scene.dataset_id, "org-consumer")] = (
        "agr-1",
        frozenset({"meter_id", "kwh"}),
    )
    receiver.delay_s["slow"] = 0.2  # each request answered after 200 ms
    engine = await engine_for(max_in_flight_per_endpoint=1)
    sub = await scene.subscribe(url=receiver.url("slow"), batch_linger_ms=0)
    await until_picked_up(engine, sub)
    for n in range(RECORDS):  # one record every 25 ms: 8 per answer of the endpoint
        await scene.produce([(f"m-{n}", {"meter_id": f"m-{n}", "kwh": n})])
        await asyncio.sleep(0.025)
    await eventually(lambda: len(receiver.records("slow")) == RECORDS, timeout_s=SETUP_WAIT_S)
    assert sorted(e["data"]["kwh"] for e in receiver.records("slow")) == list(range(RECORDS))
    # One message per record (the old way) would take 20 requests, 4 s.
    assert len(receiver.on("slow")) <= RECORDS // 3
