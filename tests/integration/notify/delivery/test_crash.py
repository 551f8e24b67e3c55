"""A worker killed with SIGKILL mid-stream loses no delivery: at restart
every record is delivered (at least once), a message sent again with the
same webhook-id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from tests.integration.notify.delivery.conftest import (
    SETUP_WAIT_S,
    Receiver,
    Scene,
    delivery_settings,
)
from tests.kafka_util import eventually

ROOT = Path(__file__).resolve().parents[4]


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def worker_process(
    scene: Scene, database_url: str, schema: str
) -> AsyncIterator[Callable[[], WorkerProcess]]:
    settings = delivery_settings(scene)
    env = {
        **os.environ,
        "NOTIFY_DEV": "true",
        "NOTIFY_LOG_JSON": "false",
        "NOTIFY_POSTGRES__DSN": database_url,
        "NOTIFY_POSTGRES__DB_SCHEMA": schema,
        "NOTIFY_KAFKA__BOOTSTRAP_SERVERS": scene.kafka.bootstrap_servers,
        "NOTIFY_DELIVERY__TOPIC_PATTERN": settings["topic_pattern"],
        "NOTIFY_DELIVERY__GROUP_ID": settings["group_id"],
        "NOTIFY_DELIVERY__RETRY_SCHEDULE_S": "[0.2, 0.2, 0.2, 0.2, 0.2, 0.2]",
        "NOTIFY_DELIVERY__QUEUE_POLL_S": "0.05",
        "NOTIFY_DELIVERY__SUBSCRIPTION_REFRESH_S": "0.2",
        "NOTIFY_DELIVERY__COMMIT_INTERVAL_S": "0.2",
        "NOTIFY_WEBHOOKS__ALLOW_TARGETS": '["127.0.0.0/8"]',
        "NOTIFY_WEBHOOKS__TIMEOUT_S": "5",
        "STANDIN_DATASET": scene.dataset_id,
        "STANDIN_TOPIC": scene.topic,
        "PYTHONPATH": str(ROOT),
    }
    processes: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.notify.delivery.worker_process"],
            env={**env, "NOTIFY_WORKER_HTTP__PORT": str(port)},
            cwd=ROOT,
        )
        processes.append(WorkerProcess(process, port))
        return processes[-1]

    yield start
    for worker in processes:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait()


async def test_a_worker_killed_mid_stream_loses_no_delivery(
    scene: Scene,
    receiver: Receiver,
    worker_process: Callable[[], WorkerProcess],
) -> None:
    scene.view.datasets[scene.dataset_id] = replace(
        scene.view.datasets[scene.dataset_id], access_level="open"
    )
    # Slow enough that the kill finds messages in flight and unlogged.
    receiver.delay_s["hook"] = 0.01
    await scene.subscribe(url=receiver.url("hook"), batch_max_records=1)
    first = worker_process()

    total = 400
    await scene.produce([(f"k{i % 20}", {"n": i}) for i in range(total)])
    await eventually(lambda: len(receiver.hits) >= 60, timeout_s=SETUP_WAIT_S)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    received_before_kill = len(receiver.hits)
    assert received_before_kill < total, "the kill came too late to test anything"

    worker_process()

    def every_record() -> bool:
        return {e["data"]["n"] for e in receiver.records("hook")} == set(range(total))

    await eventually(every_record, timeout_s=SETUP_WAIT_S * 2)
    # A record sent twice went with the same webhook-id both times.
    ids: dict[int, set[str]] = {}
    for hit in receiver.on("hook"):
        for event in hit.body:
            ids.setdefault(event["data"]["n"], set()).add(hit.message_id)
    assert all(len(message_ids) == 1 for message_ids in ids.values())
    # Each key's records arrived in order the first time each was seen.
    firsts: dict[str, list[int]] = {}
    seen: set[int] = set()
    for event in receiver.records("hook"):
        n = event["data"]["n"]
        if n not in seen:
            seen.add(n)
            firsts.setdefault(event["subject"], []).append(n)
    assert all(values == sorted(values) for values in firsts.values())


async def test_the_worker_answers_its_probes_and_counts_its_deliveries(
    scene: Scene,
    receiver: Receiver,
    worker_process: Callable[[], WorkerProcess],
) -> None:
    scene.view.datasets[scene.dataset_id] = replace(
        scene.view.datasets[scene.dataset_id], access_level="open"
    )
    await scene.subscribe(url=receiver.url("hook"))
    worker = worker_process()
    base = f"http://127.0.0.1:{worker.port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout_s=SETUP_WAIT_S)
        assert (await client.get("/healthz")).status_code == 200
        await scene.produce([("k1", {"n": 1})])
        await eventually(lambda: len(receiver.records("hook")) == 1, timeout_s=SETUP_WAIT_S)

        async def counted() -> bool:
            text = (await client.get("/metrics")).text
            return (
                'datapolis_notify_deliveries_total{channel="webhook",outcome="delivered"} 1.0'
                in text
            )

        await eventually(counted, timeout_s=SETUP_WAIT_S)
        text = (await client.get("/metrics")).text
        assert "datapolis_notify_record_to_delivery_seconds_count" in text
        assert 'datapolis_notify_queue_depth{state="dead"}' in text
