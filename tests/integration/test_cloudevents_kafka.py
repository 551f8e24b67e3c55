"""CloudEvents through the real broker, in both modes, read by a plain client."""

from __future__ import annotations

import json

from datapolis_shared.events.base import parse_event
from datapolis_shared.events.catalog import SchemaVersionAdded
from datapolis_shared.events.cloudevents import (
    CloudEvent,
    from_binary,
    from_structured,
    is_structured,
    to_binary,
)
from datapolis_shared.kafka import OutgoingRecord, Producer
from tests.kafka_util import read_topic


async def test_structured_control_event_round_trip(
    producer: Producer, new_topic, kafka_bootstrap: str
) -> None:
    topic = await new_topic("ce")
    event = SchemaVersionAdded(
        dataset_id="ds-9",
        slug="bus-positions",
        version=2,
        major=1,
        topic_name="data.bus-positions",
        json_schema={"type": "object", "properties": {"line": {"type": "string"}}},
    )
    envelope = event.to_cloudevent()
    SchemaVersionAdded.topic = topic  # type: ignore[misc]
    try:
        await producer.send_event(event, id=envelope.id)
    finally:
        SchemaVersionAdded.topic = "datapolis.catalog.events"  # type: ignore[misc]

    [record] = await read_topic(kafka_bootstrap, topic, expect=1)
    assert is_structured(record.headers)
    assert record.key == b"ds-9"
    received = from_structured(record.value)
    assert received.id == envelope.id
    assert received.type == "org.datapolis.catalog.schema.added.v1"
    assert parse_event(received) == event


async def test_binary_data_record_round_trip(
    producer: Producer, new_topic, kafka_bootstrap: str
) -> None:
    topic = await new_topic("ce")
    reading = {"meter": "PDL-0042", "kwh": 1.25, "at": "2026-11-22T08:00:00+00:00"}
    envelope = CloudEvent(
        source="/datapolis/ingest/smart-meters",
        type="org.datapolis.record.smart-meters.v1",
        subject="subject-7f3a",
        data=reading,
    )
    value, headers = to_binary(envelope)
    await producer.send(OutgoingRecord(topic, value, b"PDL-0042", headers))

    [record] = await read_topic(kafka_bootstrap, topic, expect=1)
    assert not is_structured(record.headers)
    assert json.loads(record.value) == reading  # clean JSON for any Kafka client
    attrs = {k: v.decode() for k, v in record.headers}
    assert attrs["ce_specversion"] == "1.0"
    assert attrs["ce_id"] == envelope.id
    assert attrs["ce_subject"] == "subject-7f3a"
    assert attrs["content-type"] == "application/json"
    assert from_binary(record.value, record.headers).data == reading
