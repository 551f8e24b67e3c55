"""Notify's PostgreSQL projection on the real database: each event once,
never over a newer state, and the offsets a snapshot resumes from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord

from datapolis_notify.entitlements.projection import EntitlementProjection, load_snapshot
from datapolis_shared.errors import InvalidInput
from datapolis_shared.events.base import CONSENT_EVENTS, Event
from datapolis_shared.events.catalog import (
    DatasetChanges,
    DatasetRegistered,
    DatasetRetired,
    DatasetUpdated,
    SchemaVersionAdded,
)
from datapolis_shared.events.cloudevents import to_structured
from datapolis_shared.events.consent import (
    AgreementGranted,
    AgreementRevoked,
    ConsentGranted,
    ConsentWithdrawn,
)
from datapolis_shared.postgres.pool import Pool

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CATALOG = "test.catalog"


def _record(
    event: Event, offset: int, *, topic: str | None = None, id: str | None = None
) -> ConsumerRecord[bytes, bytes]:
    value, headers = to_structured(event.to_cloudevent(id=id))
    return ConsumerRecord(
        topic or event.topic,
        0,
        offset,
        0,
        0,
        event.key().encode(),
        value,
        None,
        0,
        len(value),
        headers,
    )


async def test_events_apply_once_never_over_newer_state_with_their_offsets(
    notify_pool: Pool,
) -> None:
    projection = EntitlementProjection(notify_pool)
    registered = DatasetRegistered(
        dataset_id="ds-1",
        slug="meters",
        publisher_id="org-pub",
        access_level="personal",
        subject_field="household",
        topic_name="data.meters",
        theme="energy",
    )
    schema = SchemaVersionAdded(
        dataset_id="ds-1",
        slug="meters",
        version=2,
        major=1,
        topic_name="data.meters",
        json_schema={"properties": {"meter_id": {}, "kwh": {}}},
    )
    older_schema = schema.model_copy(
        update={"version": 1, "json_schema": {"properties": {"a": {}}}}
    )
    updated = DatasetUpdated(
        dataset_id="ds-1", slug="meters-2", changes=DatasetChanges(theme="environment")
    )
    for offset, event in enumerate((registered, schema, older_schema, updated)):
        await projection.on_record(_record(event, offset, topic=CATALOG))

    agreement = {
        "agreement_id": "agr-1",
        "dataset_id": "ds-1",
        "publisher_org_id": "org-pub",
        "consumer_org_id": "org-con",
        "ledger_hash": "h",
        "occurred_at": NOW,
    }
    granted = AgreementGranted(
        **agreement,
        ledger_sequence=5,
        purposes=["dpv:ScientificResearch"],
        fields=["kwh"],
        valid_from=NOW,
        valid_until=NOW + timedelta(days=1),
    )
    revoked = AgreementRevoked(**agreement, ledger_sequence=6, reason="breach")
    consent = {
        "consent_id": "con-1",
        "dataset_id": "ds-1",
        "subject_id": "subj-1",
        "consumer_org_id": "org-con",
        "agreement_id": "agr-1",
        "purpose": "dpv:ScientificResearch",
        "ledger_hash": "h",
        "occurred_at": NOW,
    }
    consent_granted = ConsentGranted(
        **consent, ledger_sequence=7, valid_from=NOW, valid_until=NOW + timedelta(hours=1)
    )
    withdrawn = ConsentWithdrawn(**consent, ledger_sequence=8)
    # The ends first, then the grants (a replay from older offsets); then
    # the revoke again under its own id (a redelivery): nothing moves back.
    await projection.on_record(_record(revoked, 10, id="ev-revoked"))
    await projection.on_record(_record(withdrawn, 11))
    await projection.on_record(_record(granted, 3))
    await projection.on_record(_record(consent_granted, 4))
    await projection.on_record(_record(revoked, 12, id="ev-revoked"))

    snapshot = await load_snapshot(notify_pool, (CATALOG, CONSENT_EVENTS))
    [dataset] = snapshot.datasets
    assert (dataset.view.slug, dataset.view.theme, dataset.view.access_level) == (
        "meters-2",
        "environment",
        "personal",
    )
    assert (dataset.schema_version, dataset.fields) == (2, frozenset({"meter_id", "kwh"}))
    [kept_agreement] = snapshot.agreements
    assert (kept_agreement.status, kept_agreement.ledger_sequence) == ("revoked", 6)
    [kept_consent] = snapshot.consents
    assert (kept_consent.status, kept_consent.ledger_sequence) == ("withdrawn", 8)
    # The next offset per partition never moves back.
    assert snapshot.offsets == {(CATALOG, 0): 4, (CONSENT_EVENTS, 0): 13}
    assert (
        await notify_pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'entitlements'")
        == 8
    )

    await projection.on_record(
        _record(DatasetRetired(dataset_id="ds-1", slug="meters-2"), 4, topic=CATALOG)
    )
    [dataset] = (await load_snapshot(notify_pool, (CATALOG,))).datasets
    assert dataset.view.retired


async def test_an_unreadable_change_ends_its_consent_and_still_goes_to_the_dead_letters(
    notify_pool: Pool,
) -> None:
    projection = EntitlementProjection(notify_pool)
    consent = {
        "consent_id": "con-2",
        "dataset_id": "ds-2",
        "subject_id": "subj-2",
        "consumer_org_id": "org-con",
        "agreement_id": "agr-2",
        "purpose": "dpv:ScientificResearch",
        "ledger_hash": "h",
        "occurred_at": NOW,
    }
    granted = ConsentGranted(
        **consent, ledger_sequence=3, valid_from=NOW, valid_until=NOW + timedelta(hours=1)
    )
    await projection.on_record(_record(granted, 0))
    # A withdrawal in a newer shape of its event than this notify knows.
    withdrawn = ConsentWithdrawn(**consent, ledger_sequence=4).to_cloudevent()
    newer = withdrawn.model_copy(update={"data": {**withdrawn.data, "reason": "a new field"}})
    value, headers = to_structured(newer)
    record = ConsumerRecord(CONSENT_EVENTS, 0, 1, 0, 0, b"k", value, None, 0, len(value), headers)
    with pytest.raises(InvalidInput):  # the consumer loop parks it on the dead letters
        await projection.on_record(record)
    snapshot = await load_snapshot(notify_pool, (CONSENT_EVENTS,))
    [kept] = snapshot.consents
    assert (kept.status, kept.ledger_sequence) == ("expired", 4)
    assert snapshot.offsets == {(CONSENT_EVENTS, 0): 2}
