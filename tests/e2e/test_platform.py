"""The four services as real processes, started the way `make up` starts them.

They migrate, become ready, provision the datapolis.* topics, turn not-ready
within 10 s when Kafka stops and ready again when it comes back.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import PrivateKafka, _free_port
from tests.e2e.service_env import service_env
from tests.infra import REPO

SERVICES = ("catalog", "ingest", "consent", "notify")


@dataclass
class ServiceProcess:
    name: str
    url: str
    process: asyncio.subprocess.Process


@pytest.fixture
async def platform(
    private_kafka: PrivateKafka, database_url: str, tmp_path: Path
) -> AsyncIterator[list[ServiceProcess]]:
    run_id = uuid.uuid4().hex[:8]
    started: list[ServiceProcess] = []
    try:
        for name in SERVICES:
            port = _free_port()
            env = service_env(
                name,
                kafka=private_kafka.bootstrap,
                database_url=database_url,
                schema=f"e2e_{name}_{run_id}",
                port=port,
            )
            migrate = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"datapolis_{name}",
                "migrate",
                env=env,
                cwd=REPO,
                stderr=asyncio.subprocess.PIPE,
            )
            _, errors = await asyncio.wait_for(migrate.communicate(), 60)
            assert migrate.returncode == 0, errors.decode()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"datapolis_{name}",
                "api",
                env=env,
                cwd=REPO,
                stdout=(tmp_path / f"{name}.log").open("wb"),
                stderr=asyncio.subprocess.STDOUT,
            )
            started.append(ServiceProcess(name, f"http://127.0.0.1:{port}", process))
        yield started
    finally:
        for service in started:
            service.process.terminate()
        for service in started:
            try:
                await asyncio.wait_for(service.process.wait(), 20)
            except TimeoutError:
                service.process.kill()
                pytest.fail(f"{service.name} did not stop within 20 s of SIGTERM")


async def _readiness(client: httpx.AsyncClient, services: list[ServiceProcess]) -> dict[str, int]:
    async def one(service: ServiceProcess) -> int:
        try:
            return (await client.get(f"{service.url}/readyz", timeout=5)).status_code
        except httpx.TransportError:
            return 0

    codes = await asyncio.gather(*(one(s) for s in services))
    return {s.name: code for s, code in zip(services, codes, strict=True)}


async def _wait_for(
    client: httpx.AsyncClient, services: list[ServiceProcess], status: int, timeout_s: float
) -> float:
    started = time.monotonic()
    while True:
        codes = await _readiness(client, services)
        if all(code == status for code in codes.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"readiness still {codes} after {timeout_s}s, wanted {status}")
        await asyncio.sleep(0.25)


async def test_services_follow_kafka_readiness(
    platform: list[ServiceProcess], private_kafka: PrivateKafka
) -> None:
    # Generous timeouts: four services and a broker share two cores here.
    async with httpx.AsyncClient(timeout=30) as client:
        await _wait_for(client, platform, 200, timeout_s=90)
        for service in platform:
            assert (await client.get(f"{service.url}/healthz")).json() == {"status": "alive"}
            openapi = (await client.get(f"{service.url}/openapi.json")).json()
            assert openapi["info"]["title"] == f"datapolis {service.name}"
            metrics = (await client.get(f"{service.url}/metrics")).text
            assert "datapolis_ready 1.0" in metrics

        admin = AIOKafkaAdminClient(bootstrap_servers=private_kafka.bootstrap)
        await admin.start()
        try:
            topics = set(await admin.list_topics())
        finally:
            await admin.close()
        assert {
            "datapolis.catalog.events",
            "datapolis.consent.events",
            "datapolis.ingest.events",
            "datapolis.ingest.rejected",
        } <= topics

        # Poll while the broker shuts down: the bound counts from the stop order.
        stopping = asyncio.create_task(private_kafka.stop())
        went_down = await _wait_for(client, platform, 503, timeout_s=10)
        await stopping
        problem = (await client.get(f"{platform[0].url}/readyz")).json()
        assert problem["code"] == "not-ready"
        assert problem["checks"]["kafka"] != "ok"
        assert problem["checks"]["postgres"] == "ok"

        restart_ordered = time.monotonic()
        await private_kafka.start()
        await _wait_for(client, platform, 200, timeout_s=60)
        came_back = time.monotonic() - restart_ordered
        print(f"readiness: 503 after {went_down:.1f}s, 200 after {came_back:.1f}s (restart)")
