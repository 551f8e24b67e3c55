"""A dataset's retention and partitions change after registration: PATCH
writes them to PostgreSQL and Kafka follows on every topic of the dataset,
right after the commit or, when Kafka could not, through the reconciliation,
which also sets right a topic changed behind the catalog's back. Partitions
only grow."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from datapolis_catalog.settings import CatalogSettings
from datapolis_shared.events.cloudevents import CloudEvent
from datapolis_shared.settings import KafkaSettings, ServiceSettings
from tests.integration.catalog.conftest import (
    METER_SCHEMA,
    OPERATOR,
    CatalogApp,
    Org,
    bearer,
    catalog_events,
    describe_topics,
    problem,
    wait_until,
)

DAY_MS = 24 * 3600 * 1000
RECONCILE_EVERY_S = 0.5


@pytest.fixture
def catalog_settings(service_settings: ServiceSettings) -> CatalogSettings:
    # A reconciliation every half second, so the tests watch the real loop.
    return CatalogSettings(**dict(service_settings), provisioning_interval_s=RECONCILE_EVERY_S)


async def _topics_become(bootstrap: str, expected: dict[str, dict[str, int]]) -> None:
    """Brokers apply a metadata change a moment after the controller accepted
    it: wait until the topics are described as ``expected``."""
    seen: dict[str, dict[str, Any]] = {}

    async def described_as_expected() -> bool:
        nonlocal seen
        seen = await describe_topics(bootstrap, list(expected))
        return seen == expected

    try:
        await wait_until(described_as_expected, timeout_s=10)
    except AssertionError:
        raise AssertionError(f"topics are {seen}, expected {expected}") from None


def _state(topics: list[str], *, partitions: int, retention_days: int) -> dict[str, dict[str, int]]:
    return {t: {"partitions": partitions, "retention.ms": retention_days * DAY_MS} for t in topics}


def _topics(slug: str, *majors: int) -> list[str]:
    return [f"data.{slug}", f"raw.{slug}", *(f"data.{slug}.v{m}" for m in majors)]


async def _with_major_version(catalog: CatalogApp, org: Org, **fields: Any) -> dict[str, Any]:
    """A dataset with a second major version, so it has three topics."""
    dataset = await catalog.dataset(org, **fields)
    schema = copy.deepcopy(METER_SCHEMA)
    schema["properties"]["kwh"] = {"type": "integer"}
    major = await catalog.client.post(
        f"/datasets/{dataset['slug']}/schemas",
        json={"json_schema": schema, "major": True},
        headers=org.publisher,
    )
    assert major.status_code == 201, major.text
    assert major.json()["topic_name"] == f"data.{dataset['slug']}.v2"
    return dataset


async def _topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(_code, _message, _type, _name, entries)] = response.resources
        return {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()


async def _set_configs_in_kafka(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """What an operator with Kafka's own tools would do, behind the catalog."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs)]
        )
        assert response.resources[0][0] == 0, response
    finally:
        await admin.close()


def _updates(events: list[CloudEvent]) -> list[dict[str, Any]]:
    return [
        e.data["changes"] for e in events if e.type == "org.datapolis.catalog.dataset.updated.v1"
    ]


async def test_changing_retention_sets_retention_ms_on_every_topic(catalog: CatalogApp) -> None:
    org = await catalog.organisation()
    dataset = await _with_major_version(catalog, org, retention_days=7, partitions=2)
    slug = dataset["slug"]
    bootstrap = catalog.settings.kafka.bootstrap_servers
    topics = _topics(slug, 2)
    await _topics_become(bootstrap, _state(topics, partitions=2, retention_days=7))

    changed = await catalog.client.patch(
        f"/datasets/{slug}", json={"retention_days": 14}, headers=org.publisher
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["retention_days"] == 14
    assert changed.json()["partitions"] == 2
    assert changed.json()["topics_provisioned"] is True

    await _topics_become(bootstrap, _state(topics, partitions=2, retention_days=14))
    assert (await _topic_configs(bootstrap, f"data.{slug}"))["cleanup.policy"] == "delete"
    # The AsyncAPI document and the dataset page say the same.
    page = await catalog.client.get(f"/datasets/{slug}", headers=org.publisher)
    assert page.json()["retention_days"] == 14

    events = await catalog_events(
        bootstrap, {dataset["dataset_id"]}, until=lambda found: bool(_updates(found))
    )
    assert _updates(events) == [{"retention_days": 14}]


async def test_partitions_only_grow(catalog: CatalogApp) -> None:
    org = await catalog.organisation()
    dataset = await _with_major_version(catalog, org, retention_days=3, partitions=2)
    slug = dataset["slug"]
    bootstrap = catalog.settings.kafka.bootstrap_servers
    topics = _topics(slug, 2)

    grown = await catalog.client.patch(
        f"/datasets/{slug}", json={"partitions": 5}, headers=org.publisher
    )
    assert grown.status_code == 200, grown.text
    assert grown.json()["partitions"] == 5
    assert grown.json()["topics_provisioned"] is True
    await _topics_become(bootstrap, _state(topics, partitions=5, retention_days=3))

    # Fewer partitions: refused with a reason, nothing changes anywhere.
    refused = problem(
        await catalog.client.patch(
            f"/datasets/{slug}", json={"partitions": 3, "retention_days": 9}, headers=OPERATOR
        ),
        409,
        "partitions-cannot-decrease",
    )
    assert "Kafka cannot remove partitions" in refused["detail"]
    assert refused["current_partitions"] == 5
    assert refused["requested_partitions"] == 3
    assert await describe_topics(bootstrap, topics) == _state(
        topics, partitions=5, retention_days=3
    )
    page = await catalog.client.get(f"/datasets/{slug}", headers=org.publisher)
    assert (page.json()["partitions"], page.json()["retention_days"]) == (5, 3)

    # The same count again is no change, and no event.
    same = await catalog.client.patch(
        f"/datasets/{slug}", json={"partitions": 5}, headers=org.publisher
    )
    assert same.status_code == 200, same.text
    events = await catalog_events(
        bootstrap, {dataset["dataset_id"]}, until=lambda found: bool(_updates(found))
    )
    assert _updates(events) == [{"partitions": 5}]


async def test_only_the_publisher_changes_topic_settings_within_bounds(
    catalog: CatalogApp,
) -> None:
    client = catalog.client
    owner = await catalog.organisation()
    other = await catalog.organisation()
    reader = await catalog.key(owner.org_id, ["read"], headers=owner.admin)
    dataset = await catalog.dataset(owner, retention_days=7, partitions=2)
    slug = dataset["slug"]
    url = f"/datasets/{slug}"
    bootstrap = catalog.settings.kafka.bootstrap_servers
    unchanged = _state(_topics(slug), partitions=2, retention_days=7)
    await _topics_become(bootstrap, unchanged)

    problem(
        await client.patch(url, json={"partitions": 4}, headers=other.publisher),
        403,
        "not-publisher",
    )
    problem(
        await client.patch(url, json={"retention_days": 1}, headers=other.publisher),
        403,
        "not-publisher",
    )
    problem(
        await client.patch(url, json={"retention_days": 1}, headers=bearer(reader)),
        403,
        "missing-scope",
    )
    for bad in (
        {"partitions": 0},
        {"partitions": 65},
        {"partitions": -1},
        {"partitions": "many"},
        {"partitions": 2.5},
        {"retention_days": 0},
        {"retention_days": 3651},
        {"retention_days": "forever"},
        {"retention_days": "30"},
        {"retention_days": True},
        {"retention_days": 7, "retention_ms": 1000},
    ):
        body = problem(
            await client.patch(url, json=bad, headers=owner.publisher), 422, "validation-failed"
        )
        assert body["errors"], body
    for removed in ({"partitions": None}, {"retention_days": None}):
        problem(
            await client.patch(url, json=removed, headers=owner.publisher), 422, "field-required"
        )
    assert await describe_topics(bootstrap, _topics(slug)) == unchanged

    # The operator may change anyone's dataset; the bounds are inclusive.
    by_operator = await client.patch(
        url, json={"partitions": 64, "retention_days": 3650}, headers=OPERATOR
    )
    assert by_operator.status_code == 200, by_operator.text
    await _topics_become(bootstrap, _state(_topics(slug), partitions=64, retention_days=3650))

    retired = await client.delete(url, headers=owner.publisher)
    assert retired.status_code == 200
    problem(
        await client.patch(url, json={"retention_days": 30}, headers=owner.publisher),
        409,
        "dataset-retired",
    )
    problem(
        await client.patch("/datasets/no-such-dataset", json={"partitions": 3}, headers=OPERATOR),
        404,
        "dataset-not-found",
    )


async def test_a_change_kafka_missed_is_applied_by_the_reconciliation(
    catalog: CatalogApp,
) -> None:
    org = await catalog.organisation()
    dataset = await catalog.dataset(org, retention_days=7, partitions=2)
    slug = dataset["slug"]
    bootstrap = catalog.settings.kafka.bootstrap_servers
    await _topics_become(bootstrap, _state(_topics(slug), partitions=2, retention_days=7))
    provisioner = catalog.state.provisioner
    reachable = provisioner.kafka
    # Kafka "goes down" for the catalog's admin requests.
    provisioner.kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", request_timeout_ms=1000)
    try:
        changed = await catalog.client.patch(
            f"/datasets/{slug}",
            json={"retention_days": 2, "partitions": 4},
            headers=org.publisher,
        )
        # Committed and answered; the topics are owed, and still as they were.
        assert changed.status_code == 200, changed.text
        assert changed.json()["retention_days"] == 2
        assert changed.json()["partitions"] == 4
        assert changed.json()["topics_provisioned"] is False
        assert await describe_topics(bootstrap, _topics(slug)) == _state(
            _topics(slug), partitions=2, retention_days=7
        )
    finally:
        provisioner.kafka = reachable

    async def converged() -> bool:
        page = await catalog.client.get(f"/datasets/{slug}", headers=org.publisher)
        return bool(page.json()["topics_provisioned"])

    await wait_until(converged, timeout_s=15)
    await _topics_become(bootstrap, _state(_topics(slug), partitions=4, retention_days=2))


async def test_the_reconciliation_sets_right_a_topic_changed_in_kafka(
    catalog: CatalogApp,
) -> None:
    org = await catalog.organisation()
    dataset = await catalog.dataset(org, retention_days=7, partitions=2)
    slug = dataset["slug"]
    bootstrap = catalog.settings.kafka.bootstrap_servers
    topic = f"data.{slug}"
    await _topics_become(bootstrap, _state([topic], partitions=2, retention_days=7))
    # Someone shortens the retention with Kafka's own tools and sets a value
    # the catalog does not manage (the loop paused so the test sees the drift).
    provisioner = catalog.state.provisioner
    await provisioner.stop()
    await _set_configs_in_kafka(
        bootstrap, topic, {"retention.ms": "60000", "max.message.bytes": "2000000"}
    )
    await _topics_become(bootstrap, {topic: {"partitions": 2, "retention.ms": 60000}})

    # The reconciliation loop notices and puts the dataset's retention back.
    provisioner.start()
    await _topics_become(bootstrap, _state([topic], partitions=2, retention_days=7))
    configs = await _topic_configs(bootstrap, topic)
    assert configs["cleanup.policy"] == "delete"
    # Values the catalog does not manage are left as they were set.
    assert configs["max.message.bytes"] == "2000000"
    page = await catalog.client.get(f"/datasets/{slug}", headers=org.publisher)
    assert page.json()["topics_provisioned"] is True
