"""What the alerts in deploy/k8s read from a service's /metrics moves when the
condition it stands for holds: a scrape sees readiness fall, server errors
counted by route template, and the outbox backlog rise and drain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from datapolis_shared.errors import Unavailable
from datapolis_shared.events.catalog import OrganisationRegistered
from datapolis_shared.http.app import create_service_app
from datapolis_shared.kafka import TopicSpec, ensure_topics
from datapolis_shared.postgres import outbox
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings
from tests.apps import running
from tests.kafka_util import eventually


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


class Service:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def scrape(self, name: str, **labels: str) -> float | None:
        answer = await self.client.get("/metrics")
        assert answer.status_code == 200
        return _sample(answer.text, name, **labels)


@pytest.fixture
async def service(service_settings: ServiceSettings) -> AsyncIterator[Service]:
    app = create_service_app(service_settings, title="metrics", description="", sync_keys=False)

    async def refuse(thing: str) -> None:
        # What a handler does when Kafka cannot acknowledge: a 503.
        raise Unavailable(f"Kafka did not acknowledge {thing}")

    app.add_api_route("/things/{thing}", refuse, methods=["POST"])
    async with running(app) as client:
        yield Service(app, client)


async def test_ready_gauge_falls_when_the_service_cannot_do_its_job(service: Service) -> None:
    async def ready_is(value: float) -> bool:
        return await service.scrape("datapolis_ready") == value

    await eventually(lambda: ready_is(1.0), timeout_s=15)
    # The outbox relay stops: announcements would wait, the service is not ready.
    assert service.runtime.relay is not None
    await service.runtime.relay.stop()
    await eventually(lambda: ready_is(0.0), timeout_s=15)


async def test_server_errors_are_counted_by_route_template(service: Service) -> None:
    counter = "datapolis_http_requests_total"
    labels = {"method": "POST", "route": "/things/{thing}", "status": "503"}
    assert await service.scrape(counter, **labels) is None
    for thing in ("a", "b"):
        answer = await service.client.post(f"/things/{thing}")
        assert answer.status_code == 503
    assert await service.scrape(counter, **labels) == 2.0
    # The probes and scrapes the alert leaves out carry these route labels.
    await service.client.get("/readyz")
    assert await service.scrape(counter, method="GET", route="/readyz", status="200") == 1.0
    assert (await service.scrape(counter, method="GET", route="/metrics", status="200") or 0) >= 1


async def test_outbox_backlog_and_age_rise_while_unpublished_then_drain(
    service: Service, kafka_bootstrap: str
) -> None:
    # A topic that does not exist yet (brokers here do not create topics on
    # write): the relay cannot publish, as when Kafka refuses it.
    topic = f"outbox-metrics.{uuid.uuid4().hex[:10]}"

    class Announced(OrganisationRegistered):
        pass

    Announced.topic = topic  # type: ignore[misc]
    async with service.runtime.pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, Announced(org_id="org-1", name="Lyon", kind="public-authority"))

    async def waiting() -> bool:
        return await service.scrape("datapolis_outbox_backlog") == 1.0

    await eventually(waiting, timeout_s=20)
    first_age = await service.scrape("datapolis_outbox_oldest_unpublished_age_seconds")
    assert first_age is not None
    assert first_age > 0

    async def older() -> bool:
        age = await service.scrape("datapolis_outbox_oldest_unpublished_age_seconds")
        return age is not None and age > first_age

    await eventually(older, timeout_s=30)

    settings = service.runtime.settings.kafka
    await ensure_topics(settings, [TopicSpec(topic, 1)])
    try:

        async def drained() -> bool:
            backlog = await service.scrape("datapolis_outbox_backlog")
            age = await service.scrape("datapolis_outbox_oldest_unpublished_age_seconds")
            return backlog == 0.0 and age == 0.0

        await eventually(drained, timeout_s=60)
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
