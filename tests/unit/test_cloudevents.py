"""CloudEvents encoding, checked against the CloudEvents reference SDK."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cloudevents.kafka import KafkaMessage, from_binary, from_structured

from datapolis_shared.errors import InvalidInput
from datapolis_shared.events import cloudevents as ce
from datapolis_shared.events.base import UPCASTERS, parse_event, registry
from datapolis_shared.events.catalog import DatasetRegistered
from datapolis_shared.events.consent import ConsentWithdrawn


def _reference(value: bytes, headers: ce.Headers, key: bytes | None = None) -> KafkaMessage:
    return KafkaMessage(headers=dict(headers), key=key, value=value)


def test_structured_event_reads_with_the_reference_sdk() -> None:
    event = DatasetRegistered(
        dataset_id="ds-1",
        slug="air-quality",
        publisher_id="org-1",
        access_level="open",
        key_field_name="station_id",
        topic_name="data.air-quality",
    ).to_cloudevent()
    value, headers = ce.to_structured(event)
    parsed = from_structured(_reference(value, headers))
    assert parsed["type"] == "org.datapolis.catalog.dataset.registered.v1"
    assert parsed["id"] == event.id
    assert parsed["subject"] == "ds-1"
    assert parsed.data["slug"] == "air-quality"
    assert ce.from_structured(value) == event


def test_binary_record_value_is_the_record_itself() -> None:
    record = {"station_id": "LYON-01", "no2": 23.5, "at": "2026-11-22T10:00:00Z"}
    event = ce.CloudEvent(
        source="/datapolis/ingest/air-quality",
        type="org.datapolis.record.air-quality.v1",
        subject="LYON-01",
        data=record,
    )
    value, headers = ce.to_binary(event)
    assert json.loads(value) == record  # a plain Kafka client reads clean JSON
    parsed = from_binary(_reference(value, headers))
    assert parsed["id"] == event.id
    assert parsed["source"] == "/datapolis/ingest/air-quality"
    assert parsed.data == record
    back = ce.from_binary(value, headers)
    assert back.data == record
    assert back.type == event.type


def test_binary_record_without_specversion_is_refused() -> None:
    with pytest.raises(InvalidInput, match="ce_specversion"):
        ce.from_binary(b"{}", [("ce_id", b"1")])


def test_every_event_type_is_versioned_and_past_tense() -> None:
    for type_, cls in registry().items():
        assert type_.startswith("org.datapolis.")
        assert type_.rsplit(".", 1)[1].startswith("v")
        name = cls.__name__
        assert name.endswith(("ed", "Withdrawn")), f"{name} is not past tense"


def test_unknown_event_type_gets_a_specific_error() -> None:
    envelope = ce.CloudEvent(source="/x", type="org.datapolis.nothing.v1", data={})
    with pytest.raises(InvalidInput) as info:
        parse_event(envelope)
    assert info.value.code == "unknown-event-type"


def _rename_purpose(data: dict[str, object]) -> dict[str, object]:
    renamed = {k: v for k, v in data.items() if k != "purpose_code"}
    renamed["purpose"] = data["purpose_code"]
    return renamed


def test_older_event_version_is_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    old_type = "org.datapolis.consent.withdrawn.v0"
    monkeypatch.setitem(
        UPCASTERS,
        old_type,
        (ConsentWithdrawn.type, _rename_purpose),
    )
    now = datetime.now(UTC).isoformat()
    envelope = ce.CloudEvent(
        source="/datapolis/consent",
        type=old_type,
        data={
            "consent_id": "c1",
            "dataset_id": "d1",
            "subject_id": "s1",
            "consumer_org_id": "o1",
            "purpose_code": "research",
            "agreement_id": "a1",
            "ledger_sequence": 7,
            "ledger_hash": "0" * 64,
            "occurred_at": now,
        },
    )
    event = parse_event(envelope)
    assert isinstance(event, ConsentWithdrawn)
    assert event.purpose == "research"


def test_events_refuse_unknown_fields() -> None:
    envelope = ce.CloudEvent(
        source="/datapolis/catalog",
        type=DatasetRegistered.type,
        data={
            "dataset_id": "d",
            "slug": "s",
            "publisher_id": "p",
            "access_level": "open",
            "topic_name": "data.s",
            "surprise": 1,
        },
    )
    with pytest.raises(InvalidInput) as info:
        parse_event(envelope)
    assert info.value.code == "invalid-event"
