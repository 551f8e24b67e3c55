"""Consent learns what it needs about datasets from catalog's events: the
publisher, the access level, the subject field and the fields of the current
schema. Each event is applied once, in order; a retired dataset is recorded
and its retirement hook (where agreements end) runs once; a record consent
cannot read goes to the dead letters and the ones behind it are applied.

Against the real broker and database: catalog's events go to a topic of the
test's own, which the consent app under test reads as its catalog topic.
"""

from __future__ import annotations

import uuid

import pytest

from datapolis_consent.datasets import (
    DatasetIsOpen,
    DatasetIsRetired,
    DatasetNotFound,
    UnknownFields,
    check_fields,
    fields_of,
    require_agreement_possible,
)
from datapolis_consent.projection import CONSUMER
from datapolis_shared.events.catalog import (
    DatasetChanges,
    DatasetRegistered,
    DatasetRetired,
    DatasetUpdated,
    SchemaVersionAdded,
)
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.kafka import OutgoingRecord
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.settings import KafkaSettings, PostgresSettings
from tests.integration.consent.conftest import (
    METER_SCHEMA,
    SETUP_WAIT_S,
    CatalogTopic,
    Consent,
    ConsentFactory,
)
from tests.kafka_util import TopicTail, eventually


@pytest.fixture
async def consent(start_consent: ConsentFactory, catalog_topic: CatalogTopic) -> Consent:
    return await start_consent(catalog_topic.name)


async def test_a_registered_dataset_is_known_with_its_publisher_level_subject_and_fields(
    consent: Consent, catalog_topic: CatalogTopic
) -> None:
    registered = await catalog_topic.register(
        access_level="personal", subject_field="household", publisher_id="org-enedis"
    )
    await consent.until_known(registered.dataset_id, version=1)

    by_id = await consent.dataset(registered.dataset_id)
    assert await consent.dataset(registered.slug) == by_id
    assert by_id.publisher_id == "org-enedis"
    assert by_id.access_level == "personal"
    assert by_id.personal
    assert by_id.subject_field == "household"
    assert by_id.key_field == "meter_id"
    assert by_id.schema_version == 1
    assert fields_of(by_id) == ("meter_id", "kwh", "household", "address")
    assert "address.city" in by_id.field_paths
    assert not by_id.retired
    assert require_agreement_possible(by_id) is by_id
    assert check_fields(by_id, ["kwh", "address.city"]) == ("kwh", "address.city")
    with pytest.raises(UnknownFields) as refused:
        check_fields(by_id, ["kwh", "iban"])
    assert refused.value.fields == ["iban"]

    with pytest.raises(DatasetNotFound) as missing:
        await consent.dataset(f"ds-{uuid.uuid4().hex}")
    assert missing.value.code == "dataset-not-found"
    for unstorable in ("meters\x00", "meters\ud800"):
        with pytest.raises(DatasetNotFound):
            await consent.dataset(unstorable)


async def test_an_open_dataset_is_known_and_needs_no_agreement(
    consent: Consent, catalog_topic: CatalogTopic
) -> None:
    registered = await catalog_topic.register(access_level="open")
    await consent.until_known(registered.dataset_id, version=1)
    with pytest.raises(DatasetIsOpen) as refused:
        require_agreement_possible(await consent.dataset(registered.slug))
    assert refused.value.code == "dataset-is-open"


async def test_a_new_schema_version_brings_its_fields_and_an_older_one_never_returns(
    consent: Consent, catalog_topic: CatalogTopic
) -> None:
    registered = await catalog_topic.register()
    widened = {
        **METER_SCHEMA,
        "properties": {**METER_SCHEMA["properties"], "tariff": {"type": "string"}},
    }
    await catalog_topic.send(
        SchemaVersionAdded(
            dataset_id=registered.dataset_id,
            slug=registered.slug,
            version=2,
            major=1,
            topic_name=registered.topic_name,
            json_schema=widened,
        )
    )
    await consent.until_known(registered.dataset_id, version=2)
    dataset = await consent.dataset(registered.dataset_id)
    assert fields_of(dataset) == ("meter_id", "kwh", "household", "address", "tariff")
    assert check_fields(dataset, ["tariff"]) == ("tariff",)

    # Version 1 announced again (a new event, so the inbox does not skip it):
    # the current version stays the highest.
    await catalog_topic.send(
        SchemaVersionAdded(
            dataset_id=registered.dataset_id,
            slug=registered.slug,
            version=1,
            major=1,
            topic_name=registered.topic_name,
            json_schema=METER_SCHEMA,
        )
    )
    later = await catalog_topic.register()  # on the same partition, after it
    await consent.until_known(later.dataset_id, version=1)
    dataset = await consent.dataset(registered.dataset_id)
    assert dataset.schema_version == 2
    assert "tariff" in fields_of(dataset)


async def test_a_redelivered_event_is_applied_once(
    consent: Consent, catalog_topic: CatalogTopic
) -> None:
    registered = DatasetRegistered(
        dataset_id=f"ds-{uuid.uuid4().hex[:12]}",
        slug=f"meters-{uuid.uuid4().hex[:10]}",
        publisher_id="org-publisher",
        access_level="shared",
        key_field_name="meter_id",
        topic_name="data.meters",
    )
    registration_id = await catalog_topic.send(registered)
    renamed = f"compteurs-{uuid.uuid4().hex[:8]}"
    await catalog_topic.send(
        DatasetUpdated(
            dataset_id=registered.dataset_id,
            slug=renamed,
            changes=DatasetChanges(title="Compteurs"),
        )
    )
    # The registration again, as after an outbox relay's takeover: applied a
    # second time it would undo the later change.
    await catalog_topic.send(registered, id=registration_id)
    later = await catalog_topic.register()
    await consent.until_known(later.dataset_id, version=1)

    assert (await consent.dataset(registered.dataset_id)).slug == renamed
    processed = await consent.pool.fetchval(
        "SELECT count(*) FROM inbox WHERE consumer = $1 AND event_id = $2",
        CONSUMER,
        registration_id,
    )
    assert processed == 1


async def test_a_retired_dataset_is_recorded_and_its_hook_runs_once(
    consent: Consent, catalog_topic: CatalogTopic
) -> None:
    registered = await catalog_topic.register()
    retired = DatasetRetired(dataset_id=registered.dataset_id, slug=registered.slug)
    envelope = retired.to_cloudevent()
    await catalog_topic.send(retired, id=envelope.id)
    # Delivered twice under its id, then announced again under a new one.
    await catalog_topic.send(retired, id=envelope.id)
    await catalog_topic.send(retired)
    later = await catalog_topic.register()
    await consent.until_known(later.dataset_id, version=1)

    dataset = await consent.dataset(registered.dataset_id)
    assert dataset.retired
    assert [d.dataset_id for d in consent.retirements] == [registered.dataset_id]
    assert consent.retirements[0].retired_at == dataset.retired_at
    with pytest.raises(DatasetIsRetired) as refused:
        require_agreement_possible(dataset)
    assert refused.value.code == "dataset-retired"


async def test_a_retired_slug_taken_by_a_new_dataset_names_the_new_one(
    consent: Consent, catalog_topic: CatalogTopic
) -> None:
    old = await catalog_topic.register()
    await catalog_topic.send(DatasetRetired(dataset_id=old.dataset_id, slug=old.slug))
    new = DatasetRegistered(
        **{**old.model_dump(), "dataset_id": f"ds-{uuid.uuid4().hex[:12]}", "access_level": "open"}
    )
    await catalog_topic.send(new)
    await consent.until_known(new.dataset_id)
    assert (await consent.dataset(old.slug)).dataset_id == new.dataset_id
    assert (await consent.dataset(old.dataset_id)).retired


async def test_a_slug_names_its_live_dataset_whatever_order_the_datasets_arrive_in(
    consent: Consent, catalog_topic: CatalogTopic
) -> None:
    """The events of two datasets travel on different partitions: the new
    holder of a slug may be known before the old holder's registration is
    applied, and before its retirement."""
    slug = f"meters-{uuid.uuid4().hex[:10]}"
    new = DatasetRegistered(
        dataset_id=f"ds-{uuid.uuid4().hex[:12]}",
        slug=slug,
        publisher_id="org-publisher",
        access_level="shared",
        topic_name=f"data.{slug}",
    )
    old = new.model_copy(update={"dataset_id": f"ds-{uuid.uuid4().hex[:12]}"})
    await catalog_topic.send(new)
    await catalog_topic.send(old)
    await catalog_topic.send(DatasetRetired(dataset_id=old.dataset_id, slug=slug))
    later = await catalog_topic.register()
    await consent.until_known(later.dataset_id)
    assert (await consent.dataset(old.dataset_id)).retired
    assert (await consent.dataset(slug)).dataset_id == new.dataset_id


async def test_a_record_consent_cannot_read_is_dead_lettered_and_the_next_applied(
    consent: Consent, catalog_topic: CatalogTopic, dead_letters_tail: TopicTail
) -> None:
    await catalog_topic.send_raw(b"{not json")
    good = await catalog_topic.register()
    # A catalog event whose data does not parse (an access level catalog
    # never had).
    bad = DatasetRegistered(
        dataset_id=f"ds-{uuid.uuid4().hex[:12]}",
        slug=f"meters-{uuid.uuid4().hex[:10]}",
        publisher_id="org-publisher",
        access_level="shared",
        topic_name="data.meters",
    )
    envelope = bad.to_cloudevent()
    envelope.data["access_level"] = "secret"
    value, headers = to_structured(envelope)
    await catalog_topic.producer.send(
        OutgoingRecord(catalog_topic.name, value, bad.dataset_id.encode(), headers)
    )
    after = await catalog_topic.register()

    await consent.until_known(good.dataset_id, version=1)
    await consent.until_known(after.dataset_id, version=1)
    assert not await consent.knows(bad.dataset_id)

    async def parked() -> list[bytes]:
        return [
            r.value or b""
            for r in await dead_letters_tail.read()
            if dict(r.headers).get("dl_source_topic") == catalog_topic.name.encode()
        ]

    async def both_parked() -> bool:
        return len(await parked()) >= 2

    await eventually(both_parked, timeout_s=SETUP_WAIT_S)
    values = await parked()
    assert values[0] == b"{not json"
    assert bad.dataset_id.encode() in values[1]


async def test_readiness_reports_the_datasets_consumer(
    consent: Consent, catalog_topic: CatalogTopic
) -> None:
    async def reported_ok() -> bool:
        response = await consent.client.get("/readyz")
        body = response.json()
        return bool(body.get("checks", {}).get(f"consumer:{CONSUMER}") == "ok")

    await eventually(reported_ok, timeout_s=SETUP_WAIT_S)
    # Stopped, it says so, and the service is not ready.
    (loop,) = [c for c in consent.app.state.runtime.consumers if c.name == CONSUMER]
    await loop.stop()

    async def reported_stopped() -> bool:
        response = await consent.client.get("/readyz")
        checks = response.json().get("checks", {})
        return response.status_code == 503 and checks.get(f"consumer:{CONSUMER}") == "stopped"

    await eventually(reported_stopped, timeout_s=5)


async def test_started_before_its_migration_consent_holds_catalogs_events_until_it_runs(
    start_consent: ConsentFactory,
    catalog_topic: CatalogTopic,
    dead_letters_tail: TopicTail,
    kafka_settings: KafkaSettings,
    postgres_settings: PostgresSettings,
) -> None:
    # A short retry budget: the record outlasts it while the tables are missing.
    quick = kafka_settings.model_copy(
        update={"consumer_retry_attempts": 2, "consumer_retry_max_s": 1.0}
    )
    consent = await start_consent(catalog_topic.name, migrate=False, kafka=quick)
    registered = await catalog_topic.register()

    async def paused() -> bool:
        response = await consent.client.get("/readyz")
        check = str(response.json().get("checks", {}).get(f"consumer:{CONSUMER}"))
        return response.status_code == 503 and "migrate" in check

    await eventually(paused, timeout_s=SETUP_WAIT_S)
    await apply(
        postgres_settings.dsn.get_secret_value(),
        postgres_settings.db_schema,
        service_migrations("datapolis_consent"),
    )
    await consent.until_known(registered.dataset_id, version=1)
    parked = [
        r
        for r in await dead_letters_tail.read()
        if dict(r.headers).get("dl_source_topic") == catalog_topic.name.encode()
    ]
    assert parked == []
