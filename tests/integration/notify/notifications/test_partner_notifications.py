"""Partner notifications end to end: the real consent service, broker and
database, the real notify worker, and a webhook receiver verifying every
signature with the Standard Webhooks reference verifier. Each party hears of
the changes that concern it, and no one else does; an event read twice
notifies once."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiokafka import TopicPartition

from datapolis_shared.events.catalog import DatasetRegistered, DatasetRetired, SchemaVersionAdded
from datapolis_shared.kafka import Producer, TopicSpec, ensure_topics
from datapolis_shared.settings import KafkaSettings
from tests.integration.catalog.conftest import delete_topics
from tests.integration.consent.conftest import METER_SCHEMA, CatalogTopic, ConsentFactory
from tests.integration.consent.test_agreements import _dataset, _parties, _requested
from tests.integration.notify.notifications.conftest import WAIT_S, NotifyUnderTest
from tests.kafka_util import TopicTail, eventually

AGREEMENTS = "org.datapolis.notify.agreement."


async def _rows(notify: NotifyUnderTest, subscription_id: str) -> list[dict[str, Any]]:
    rows = await notify.pool.fetch(
        "SELECT * FROM deliveries WHERE subscription_id = $1 ORDER BY created_at",
        subscription_id,
    )
    return [dict(r) for r in rows]


def _secret(subscription: dict[str, Any]) -> str:
    secret: str = subscription["signing_key"]["secret"]
    return secret


async def test_the_publisher_hears_of_a_request_and_the_consumer_of_the_grant_and_revoke(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    notify_under_test: NotifyUnderTest,
) -> None:
    notify = notify_under_test
    parties = await _parties(start_consent, catalog_topic, producer)
    dataset_id = await _dataset(parties)
    await notify.until_known(dataset_id, version=1)
    slug = (await parties.consent.dataset(dataset_id)).slug
    # Notifications-only subscriptions: the publisher's, the consumer's, and
    # a stranger's who asked for agreement notifications too.
    publisher = await notify.subscribe(
        parties.publisher.org_id, "publisher", notifications=["agreements"]
    )
    consumer = await notify.subscribe(
        parties.consumer.org_id, "consumer", notifications=["agreements"]
    )
    stranger = await notify.subscribe(
        parties.stranger.org_id, "stranger", notifications=["agreements"]
    )

    agreement = await _requested(parties, dataset_id)
    agreement_id = agreement["agreement_id"]
    (requested,) = await notify.notifications("publisher", _secret(publisher), 1)
    assert requested["type"] == AGREEMENTS + "requested.v1"
    assert requested["source"] == "/datapolis/notify"
    assert requested["data"]["agreement_id"] == agreement_id
    assert requested["data"]["dataset_id"] == dataset_id
    assert requested["data"]["dataset"] == slug
    assert requested["data"]["consumer_org_id"] == parties.consumer.org_id
    assert requested["data"]["project_name"] == "Heat map"
    assert requested["data"]["terms"]["fields"] == ["meter_id", "kwh", "address.city"]

    client = parties.consent.client
    granted = await client.post(
        f"/agreements/{agreement_id}/grant", headers=parties.publisher.headers
    )
    assert granted.status_code == 200, granted.text
    revoked = await client.post(
        f"/agreements/{agreement_id}/revoke",
        json={"reason": "breach of terms"},
        headers=parties.publisher.headers,
    )
    assert revoked.status_code == 200, revoked.text

    told = await notify.notifications("consumer", _secret(consumer), 2)
    assert [e["type"] for e in told] == [AGREEMENTS + "granted.v1", AGREEMENTS + "revoked.v1"]
    grant, revoke = told
    assert grant["data"]["terms"]["purposes"] == agreement["purposes"]
    assert revoke["data"]["reason"] == "breach of terms"
    assert revoke["data"]["status"] == "revoked"
    assert revoke["data"]["agreement_id"] == agreement_id
    assert revoke["data"]["dataset"] == slug

    # The log names the agreement each notification tells of.
    logged = await _rows(notify, consumer["subscription_id"])
    assert [(r["event_type"], r["status"]) for r in logged] == [
        (AGREEMENTS + "granted.v1", "delivered"),
        (AGREEMENTS + "revoked.v1", "delivered"),
    ]
    assert all(r["agreement_ids"] == [agreement_id] for r in logged)
    assert all(r["kind"] == "notification" for r in logged)
    # The publisher heard only of the request; the stranger of nothing.
    assert len(notify.receiver.on("publisher")) == 1
    assert await _rows(notify, stranger["subscription_id"]) == []
    assert notify.receiver.on("stranger") == []


async def test_subscribers_hear_of_a_new_schema_and_a_retirement_once_each(
    catalog_topic: CatalogTopic,
    notify_under_test: NotifyUnderTest,
) -> None:
    notify = notify_under_test
    registered = await catalog_topic.register(
        access_level="open", publisher_id=f"org-pub-{uuid.uuid4().hex[:8]}"
    )
    await notify.until_known(registered.dataset_id, version=1)
    subscriber = await notify.subscribe(
        f"org-sub-{uuid.uuid4().hex[:8]}",
        "subscriber",
        dataset=registered.dataset_id,
        notifications=["datasets"],
    )
    # Receives the dataset's records, but asked for no notifications.
    silent = await notify.subscribe(
        f"org-quiet-{uuid.uuid4().hex[:8]}", "quiet", dataset=registered.dataset_id
    )
    other_dataset = await catalog_topic.register(access_level="open")
    await notify.until_known(other_dataset.dataset_id, version=1)
    elsewhere = await notify.subscribe(
        f"org-else-{uuid.uuid4().hex[:8]}",
        "elsewhere",
        dataset=other_dataset.dataset_id,
        notifications=["datasets"],
    )

    schema = {**METER_SCHEMA, "properties": {**METER_SCHEMA["properties"], "voltage": {}}}
    added = SchemaVersionAdded(
        dataset_id=registered.dataset_id,
        slug=registered.slug,
        version=2,
        major=1,
        topic_name=registered.topic_name,
        json_schema=schema,
    )
    await catalog_topic.send(added)
    retired = DatasetRetired(dataset_id=registered.dataset_id, slug=registered.slug)
    retired_id = await catalog_topic.send(retired)
    # The retirement read again (a redelivery), then a marker: once the
    # marker's notification is queued, the duplicate was read before it
    # (one partition).
    await catalog_topic.send(retired, id=retired_id)
    marker = DatasetRetired(dataset_id=other_dataset.dataset_id, slug=other_dataset.slug)
    await catalog_topic.send(marker)
    await notify.notifications("elsewhere", _secret(elsewhere), 1)

    told = await notify.notifications("subscriber", _secret(subscriber), 2)
    assert [e["type"] for e in told] == [
        "org.datapolis.notify.dataset.schema.added.v1",
        "org.datapolis.notify.dataset.retired.v1",
    ]
    schema_change, retirement = told
    assert schema_change["data"] == {
        "dataset_id": registered.dataset_id,
        "dataset": registered.slug,
        "version": 2,
        "major": 1,
        "fields": ["address", "household", "kwh", "meter_id", "voltage"],
    }
    assert retirement["data"] == {"dataset_id": registered.dataset_id, "dataset": registered.slug}
    logged = await _rows(notify, subscriber["subscription_id"])
    assert len(logged) == 2, logged
    assert len(notify.receiver.on("subscriber")) == 2
    assert await _rows(notify, silent["subscription_id"]) == []
    # The other dataset's subscriber heard only of its own dataset.
    (own,) = await _rows(notify, elsewhere["subscription_id"])
    assert own["dataset_id"] == other_dataset.dataset_id


async def test_a_new_dataset_in_a_followed_theme_is_notified_to_its_followers_only(
    catalog_topic: CatalogTopic,
    notify_under_test: NotifyUnderTest,
) -> None:
    notify = notify_under_test
    theme = f"energy-{uuid.uuid4().hex[:6]}"
    follower = await notify.subscribe(
        f"org-fol-{uuid.uuid4().hex[:8]}", "follower", themes=[theme, "transport"]
    )
    other = await notify.subscribe(
        f"org-oth-{uuid.uuid4().hex[:8]}", "other", themes=[f"health-{uuid.uuid4().hex[:6]}"]
    )
    slug = f"grid-{uuid.uuid4().hex[:8]}"
    registered = DatasetRegistered(
        dataset_id=f"ds-{uuid.uuid4().hex[:12]}",
        slug=slug,
        publisher_id="org-grid",
        access_level="open",
        topic_name=f"data.{slug}",
        theme=theme,
    )
    await catalog_topic.send(registered)
    (told,) = await notify.notifications("follower", _secret(follower), 1)
    assert told["type"] == "org.datapolis.notify.dataset.registered.v1"
    assert told["data"] == {
        "dataset_id": registered.dataset_id,
        "dataset": slug,
        "theme": theme,
        "access_level": "open",
        "publisher_id": "org-grid",
    }
    await eventually(
        lambda: notify.pool.fetchval(
            "SELECT count(*) = 1 FROM deliveries WHERE subscription_id = $1",
            follower["subscription_id"],
        ),
        timeout_s=WAIT_S,
    )
    assert await _rows(notify, other["subscription_id"]) == []


async def test_the_consumer_hears_its_agreement_ended_when_the_dataset_is_retired(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    producer: Producer,
    notify_under_test: NotifyUnderTest,
) -> None:
    notify = notify_under_test
    parties = await _parties(start_consent, catalog_topic, producer)
    dataset_id = await _dataset(parties)
    await notify.until_known(dataset_id, version=1)
    consumer = await notify.subscribe(
        parties.consumer.org_id, "consumer", notifications=["agreements"]
    )
    agreement = await _requested(parties, dataset_id)
    granted = await parties.consent.client.post(
        f"/agreements/{agreement['agreement_id']}/grant", headers=parties.publisher.headers
    )
    assert granted.status_code == 200, granted.text
    slug = (await parties.consent.dataset(dataset_id)).slug
    # The publisher retires its dataset: consent ends the agreement.
    await catalog_topic.send(DatasetRetired(dataset_id=dataset_id, slug=slug))

    told = await notify.notifications("consumer", _secret(consumer), 2)
    assert [e["type"] for e in told] == [AGREEMENTS + "granted.v1", AGREEMENTS + "terminated.v1"]
    ended = told[1]["data"]
    assert ended["agreement_id"] == agreement["agreement_id"]
    assert ended["status"] == "terminated"
    assert ended["reason"]


async def test_a_kafka_subscription_gets_its_notifications_on_its_topic(
    catalog_topic: CatalogTopic,
    notify_under_test: NotifyUnderTest,
    kafka_settings: KafkaSettings,
) -> None:
    notify = notify_under_test
    registered = await catalog_topic.register(access_level="open")
    await notify.until_known(registered.dataset_id, version=1)
    response = await notify.api.post(
        "/subscriptions",
        json={"channel": "kafka", "dataset": registered.dataset_id, "notifications": ["datasets"]},
        headers=await notify.headers_for(f"org-k-{uuid.uuid4().hex[:8]}"),
    )
    assert response.status_code == 201, response.text
    subscription = response.json()
    topic = subscription["kafka_topic"]
    try:
        await catalog_topic.send(
            DatasetRetired(dataset_id=registered.dataset_id, slug=registered.slug)
        )
        found: list[dict[str, Any]] = []

        async def arrived() -> bool:
            await ensure_topics(kafka_settings, [TopicSpec(topic, 3)])
            start = {TopicPartition(topic, p): 0 for p in range(3)}
            tail = TopicTail(kafka_settings.bootstrap_servers, topic, start)
            found[:] = [orjson.loads(r.value) for r in await tail.read() if r.value]
            return bool(found)

        await eventually(arrived, timeout_s=WAIT_S)
        (event,) = found
        assert event["type"] == "org.datapolis.notify.dataset.retired.v1"
        assert event["data"]["dataset_id"] == registered.dataset_id
        (row,) = await _rows(notify, subscription["subscription_id"])
        assert (row["channel"], row["status"]) == ("kafka", "delivered")
        assert row["delivery_id"] == event["id"]
    finally:
        await delete_topics(kafka_settings.bootstrap_servers, [topic])
