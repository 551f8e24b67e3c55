"""Ingest replicas share the registry's consumer group, so each receives only
some of catalog's events: a dataset or schema version applied by one replica
must still be known to all of them within seconds, and a replica whose LISTEN
connection dropped must catch up on what it missed."""

from __future__ import annotations

import uuid
from typing import Any

from datapolis_ingest.registry import DatasetRegistry, apply_event
from datapolis_shared.events.catalog import DatasetRegistered, SchemaVersionAdded
from datapolis_shared.kafka import ConsumerLoop, Producer
from datapolis_shared.postgres.pool import Pool
from tests.integration.ingest.conftest import (
    METER_SCHEMA,
    DatasetFactory,
    Ingest,
    IngestFactory,
    Publisher,
    reading,
    until_key_works,
    until_known,
)
from tests.kafka_util import eventually

# Once one replica applied a change, the others know it within this bound.
PROPAGATION_BOUND_S = 3.0


def _registry(ingest: Ingest) -> DatasetRegistry:
    registry: DatasetRegistry = ingest.app.state.registry
    return registry


def _registry_consumer(ingest: Ingest) -> ConsumerLoop:
    consumers: list[ConsumerLoop] = ingest.app.state.runtime.consumers
    (loop,) = [c for c in consumers if c.name == "dataset-registry"]
    return loop


async def _push(ingest: Ingest, who: Publisher, slug: str, records: list[Any]) -> dict[str, Any]:
    response = await ingest.client.post(
        f"/datasets/{slug}/records", json=records, headers=who.headers
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_change_applied_by_one_replica_is_known_to_every_replica(
    start_ingest: IngestFactory,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    producer: Producer,
) -> None:
    applier = await start_ingest()
    other = await start_ingest()
    assert applier.settings.service_name == other.settings.service_name  # one consumer group
    # The other replica no longer receives any of catalog's events: the group
    # gives every partition to the applier.
    await _registry_consumer(other).stop()

    dataset = await register_dataset(publisher.org_id)
    await until_known(applier, dataset.slug, version=1)
    await eventually(lambda: other.knows(dataset.slug, version=1), timeout_s=PROPAGATION_BOUND_S)
    await until_key_works(other, publisher)
    answer = await _push(other, publisher, dataset.slug, [reading(0), reading(1, kwh="a lot")])
    assert answer["schema_version"] == 1
    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == [1]

    # A new schema version, as strict as a producer can be surprised by.
    stricter = {**METER_SCHEMA, "required": [*METER_SCHEMA["required"], "household"]}
    await producer.send_event(
        SchemaVersionAdded(
            dataset_id=dataset.dataset_id,
            slug=dataset.slug,
            version=2,
            major=1,
            topic_name=dataset.data_topic,
            json_schema=stricter,
        )
    )
    await until_known(applier, dataset.slug, version=2)
    await eventually(lambda: other.knows(dataset.slug, version=2), timeout_s=PROPAGATION_BOUND_S)
    answer = await _push(other, publisher, dataset.slug, [reading(2), reading(3, household="h-1")])
    assert answer["schema_version"] == 2
    assert answer["accepted"] == 1
    assert answer["rejected"][0]["index"] == 0
    assert "household" in answer["rejected"][0]["errors"][0]["message"]


async def test_a_listener_reconnect_reloads_every_dataset(
    start_ingest: IngestFactory, pool: Pool
) -> None:
    ingest = await start_ingest()
    registry = _registry(ingest)
    first_pid = registry.listener_pid
    assert first_pid is not None
    assert await registry.problem() is None

    # Written as another process would while this one was not listening: the
    # rows change, and no announcement reaches this process.
    slug = f"missed-{uuid.uuid4().hex[:10]}"
    dataset_id = f"ds-{uuid.uuid4().hex[:12]}"
    async with pool.acquire() as conn, conn.transaction():
        await apply_event(
            conn,
            DatasetRegistered(
                dataset_id=dataset_id,
                slug=slug,
                publisher_id="org-missed",
                access_level="open",
                key_field_name="meter_id",
                topic_name=f"data.{slug}",
            ),
        )
        await apply_event(
            conn,
            SchemaVersionAdded(
                dataset_id=dataset_id,
                slug=slug,
                version=1,
                major=1,
                topic_name=f"data.{slug}",
                json_schema=METER_SCHEMA,
            ),
        )
    assert not ingest.knows(slug)

    # The LISTEN connection drops (PostgreSQL restart, failover, network).
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", first_pid)

    await eventually(lambda: ingest.knows(slug, version=1), timeout_s=5)
    assert registry.listener_pid not in (None, first_pid)
    assert await registry.problem() is None


async def test_readiness_fails_while_the_registry_does_not_listen(
    start_ingest: IngestFactory,
) -> None:
    ingest = await start_ingest()

    async def ready() -> bool:
        response = await ingest.client.get("/readyz")
        return response.status_code == 200

    await eventually(ready, timeout_s=20, interval_s=0.5)
    await _registry(ingest).stop()

    async def names_the_listener() -> bool:
        response = await ingest.client.get("/readyz")
        checks: dict[str, str] = response.json()["checks"]
        return response.status_code == 503 and checks["dataset-registry-listener"] != "ok"

    await eventually(names_the_listener, timeout_s=5, interval_s=0.5)
