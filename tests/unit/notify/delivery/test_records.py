"""The rules of a delivery that need no I/O: filter, projection, message
shape and id, the offsets that may be committed, the retry delays."""

from __future__ import annotations

import json

from datapolis_notify.delivery.engine import schedule_delay
from datapolis_notify.delivery.offsets import OffsetTracker
from datapolis_notify.delivery.records import (
    SourceRecord,
    batch_body,
    cloud_event,
    decided,
    message_id,
    relied_on,
)
from datapolis_notify.ports import Entitled, NotEntitled
from datapolis_notify.projection import matches


def record(offset: int = 7, key: str | None = "m-1", **value: object) -> SourceRecord:
    return SourceRecord(
        topic="data.meters",
        partition=2,
        offset=offset,
        key=key,
        value=value or {"meter_id": "m-1", "kwh": 3.5, "household": "h-9"},
        headers={"ce_id": "evt-1", "ce_source": "/ingest/meters", "ce_type": "org.x.v1"},
        timestamp_ms=1_700_000_000_000,
    )


def test_the_filter_takes_only_records_whose_fields_equal_it() -> None:
    assert matches({"district": "Centre", "n": 1}, {"district": "Centre"})
    assert not matches({"district": "North"}, {"district": "Centre"})
    assert not matches({"n": 1}, {"district": "Centre"})
    assert matches({"n": 1}, {})
    assert not matches([1, 2], {"district": "Centre"})


def test_the_projection_is_the_agreement_narrowed_by_the_subscription() -> None:
    item = decided(record(), Entitled("agr-1", None, frozenset({"meter_id", "kwh"})), None)
    assert item.data == {"meter_id": "m-1", "kwh": 3.5}
    # The subscription cannot widen what the agreement allows.
    wider = decided(record(), Entitled("agr-1", None, frozenset({"kwh"})), frozenset({"household"}))
    assert wider.data == {}
    refused = decided(record(), NotEntitled("no-active-consent"), None)
    assert refused.data is None
    assert refused.refusal == NotEntitled("no-active-consent")


def test_each_record_is_a_structured_cloud_event_of_its_own_attributes() -> None:
    event = cloud_event(record(), {"kwh": 3.5}, "ds-1")
    assert event["id"] == "evt-1"
    assert event["source"] == "/ingest/meters"
    assert event["type"] == "org.x.v1"
    assert event["subject"] == "m-1"
    assert event["data"] == {"kwh": 3.5}
    bare = SourceRecord("data.meters", 0, 3, None, {"a": 1}, {}, 1_700_000_000_000)
    plain = cloud_event(bare, {"a": 1}, None)
    assert plain["id"] == "data.meters:0:3"
    assert "subject" not in plain
    assert json.loads(batch_body([event, plain]))[1]["id"] == "data.meters:0:3"


def test_a_message_id_is_the_same_for_the_same_records_and_differs_otherwise() -> None:
    first = message_id("sub-1", [record(1), record(2)])
    assert first == message_id("sub-1", [record(1), record(2)])
    assert first.startswith("msg_")
    assert first != message_id("sub-2", [record(1), record(2)])
    assert first != message_id("sub-1", [record(1)])


def test_the_log_names_every_agreement_and_consent_relied_on() -> None:
    items = [
        decided(record(1), Entitled("agr-1", "con-1", None), None),
        decided(record(2), Entitled("agr-1", "con-2", None), None),
        decided(record(3), NotEntitled("no-active-consent"), None),
    ]
    assert relied_on(items) == (["agr-1"], ["con-1", "con-2"])


def test_a_record_held_keeps_its_offset_from_being_committed() -> None:
    tracker = OffsetTracker()
    first = tracker.read("t", 0, 10, 2)
    second = tracker.read("t", 0, 11, 1)
    tracker.read("t", 0, 12, 0)
    assert tracker.to_commit() == {("t", 0): 10}
    tracker.committed({("t", 0): 10})
    first()
    assert tracker.to_commit() == {}  # still held by its second subscription
    first()
    first()  # an extra release changes nothing
    assert tracker.to_commit() == {("t", 0): 11}
    second()
    assert tracker.to_commit() == {("t", 0): 13}


def test_retry_delays_follow_the_schedule_then_stop() -> None:
    delay = schedule_delay([5.0, 300.0], jitter=0.0)
    assert delay(1, None) == 5.0
    assert delay(2, None) == 300.0
    assert delay(3, None) is None
    # Retry-After asking for longer is honoured.
    assert delay(1, 60.0) == 60.0
    jittered = schedule_delay([10.0], jitter=0.5)(1, None)
    assert jittered is not None
    assert 10.0 <= jittered <= 15.0
