"""Pushing records over HTTP: validated records reach the dataset topic as
clean JSON with ce_* headers, invalid ones the dead letters with reasons,
every error is problem+json with a stable code."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from datapolis_shared.events.catalog import DatasetRetired, SchemaVersionAdded
from datapolis_shared.kafka import Producer, TopicSpec, ensure_topics
from datapolis_shared.settings import KafkaSettings
from tests.integration.ingest.conftest import (
    METER_SCHEMA,
    DatasetFactory,
    Ingest,
    IngestFactory,
    Publisher,
    issue_key,
    reading,
    until_key_works,
    until_known,
)
from tests.kafka_util import TopicTail, eventually, read_topic


def _headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


async def _dead_letters(tail: TopicTail, dataset_id: str, expect: int) -> list[dict[str, Any]]:
    async def matching() -> list[dict[str, Any]]:
        records = await tail.read()
        events = [orjson.loads(r.value) for r in records if r.key == dataset_id.encode()]
        return [e["data"] for e in events]

    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        found[:] = await matching()
        return len(found) >= expect

    await eventually(enough, timeout_s=20, interval_s=0.5)
    return found


async def _ready(ingest: Ingest, who: Publisher, slug: str) -> None:
    await until_known(ingest, slug, version=1)
    await until_key_works(ingest, who)


async def test_valid_records_reach_the_topic_and_invalid_ones_the_dead_letters(
    ingest: Ingest,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    kafka_bootstrap: str,
    ingest_rejected_tail: TopicTail,
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)
    good = [reading(i) for i in range(3)]
    bad_type = reading(3, kwh="a lot")
    missing = {"meter_id": "m-1", "kwh": 2}  # no measured_at
    batch = [good[0], bad_type, good[1], missing, good[2], "not an object"]

    response = await ingest.client.post(
        f"/datasets/{dataset.slug}/records", json=batch, headers=publisher.headers
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 3
    assert answer["duplicates"] == 0
    assert [r["index"] for r in answer["rejected"]] == [1, 3, 5]
    assert answer["rejected"][0]["errors"] == [
        {"path": "/kwh", "message": '"a lot" is not of type "number"'}
    ]
    assert "measured_at" in answer["rejected"][1]["errors"][0]["message"]

    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=3)
    assert sorted(orjson.loads(r.value)["id"] for r in records) == sorted(g["id"] for g in good)
    for record in records:
        body = orjson.loads(record.value)  # clean JSON: the record itself
        headers = _headers(record)
        assert record.key == body["meter_id"].encode()
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_id"] == body["id"]
        assert headers["ce_source"] == f"/datapolis/ingest/{dataset.slug}"
        assert headers["ce_type"] == f"org.datapolis.record.{dataset.slug}.v1"
        assert headers["ce_dataschema"].endswith(f"/datasets/{dataset.slug}/schemas/1")
        assert headers["ce_producer"] == publisher.org_id
        assert headers["content-type"] == "application/json"
        assert "ce_time" in headers

    dead = await _dead_letters(ingest_rejected_tail, dataset.dataset_id, expect=3)
    assert sorted(map(orjson.dumps, (d["payload"] for d in dead))) == sorted(
        map(orjson.dumps, [bad_type, missing, "not an object"])
    )
    for letter in dead:
        assert letter["producer_org_id"] == publisher.org_id
        assert letter["channel"] == "http"
        assert letter["errors"]
        assert letter["rejected_at"]
        assert letter["schema_version"] == 1


async def test_ndjson_a_malformed_line_is_rejected_alone(
    ingest: Ingest,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    kafka_bootstrap: str,
    ingest_rejected_tail: TopicTail,
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)
    lines = [orjson.dumps(reading(0)), b'{"meter_id": "m-1", "kwh": ', orjson.dumps(reading(2))]
    body = b"\n".join(lines) + b"\n\n"

    response = await ingest.client.post(
        f"/datasets/{dataset.slug}/records",
        content=body,
        headers={**publisher.headers, "Content-Type": "application/x-ndjson"},
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 2
    assert answer["rejected"][0]["index"] == 1
    assert answer["rejected"][0]["line"] == 2
    assert "not valid JSON" in answer["rejected"][0]["errors"][0]["message"]
    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=2)
    # NDJSON lines are forwarded byte for byte.
    assert sorted(r.value for r in records) == sorted([lines[0], lines[2]])
    dead = await _dead_letters(ingest_rejected_tail, dataset.dataset_id, expect=1)
    assert dead[0]["payload"] == '{"meter_id": "m-1", "kwh":'


async def test_refusals_are_problems_with_stable_codes(
    start_ingest: IngestFactory,
    publisher: Publisher,
    producer: Producer,
    register_dataset: DatasetFactory,
) -> None:
    ingest = await start_ingest(max_batch_records=5)
    dataset = await register_dataset(publisher.org_id)
    other = await issue_key(producer, f"org-{uuid.uuid4().hex[:8]}", ["ingest"])
    reader = await issue_key(producer, publisher.org_id, ["read"])
    await _ready(ingest, publisher, dataset.slug)
    await until_key_works(ingest, other)
    await until_key_works(ingest, reader)
    url = f"/datasets/{dataset.slug}/records"
    post = ingest.client.post

    _problem(await post(url, json=[reading(0)]), 401, "missing-api-key")
    _problem(await post(url, json=[reading(0)], headers=reader.headers), 403, "missing-scope")
    _problem(
        await post(url, json=[reading(0)], headers=other.headers), 403, "not-dataset-publisher"
    )
    # A slug catalog would refuse cannot exist; a well-formed one ingest does
    # not know may have been registered a moment ago (test_propagation.py).
    _problem(
        await post(
            "/datasets/No_Such_Dataset/records", json=[reading(0)], headers=publisher.headers
        ),
        404,
        "dataset-not-found",
    )
    not_yet = await post(
        "/datasets/no-such-dataset/records", json=[reading(0)], headers=publisher.headers
    )
    _problem(not_yet, 503, "dataset-not-known-yet")
    assert not_yet.headers["retry-after"] == "1"
    _problem(
        await post(
            url, content=b"kwh=1", headers={**publisher.headers, "Content-Type": "text/csv"}
        ),
        415,
        "unsupported-media-type",
    )
    malformed = await post(
        url,
        content=b'[\n  {"meter_id": "m-1",\n   "kwh": 1,,}\n]',
        headers={**publisher.headers, "Content-Type": "application/json"},
    )
    body = _problem(malformed, 422, "malformed-json")
    assert (body["line"], body["column"]) == (3, 13)
    _problem(await post(url, json=[], headers=publisher.headers), 422, "empty-batch")
    too_many = _problem(
        await post(url, json=[reading(i) for i in range(6)], headers=publisher.headers),
        413,
        "too-many-records",
    )
    assert too_many["max_records"] == 5
    huge = [reading(0, note="x" * (ingest.settings.http.max_body_bytes + 10))]
    _problem(await post(url, json=huge, headers=publisher.headers), 413, "payload-too-large")


async def test_idempotency_key_replays_the_first_answer(
    ingest: Ingest, publisher: Publisher, register_dataset: DatasetFactory, kafka_bootstrap: str
) -> None:
    dataset = await register_dataset(publisher.org_id, key_field=None)
    await _ready(ingest, publisher, dataset.slug)
    # Records without ids: only the request key protects against the retry.
    batch = [{k: v for k, v in reading(i).items() if k != "id"} for i in range(4)]
    headers = {**publisher.headers, "Idempotency-Key": f"batch-{uuid.uuid4()}"}
    url = f"/datasets/{dataset.slug}/records"

    first = await ingest.client.post(url, json=batch, headers=headers)
    retry = await ingest.client.post(url, json=batch, headers=headers)
    changed = await ingest.client.post(url, json=batch[:2], headers=headers)

    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    _problem(changed, 422, "idempotency-key-reused")
    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=5, timeout_s=5)
    assert len(records) == 4


async def test_records_with_the_same_id_are_written_once(
    ingest: Ingest, publisher: Publisher, register_dataset: DatasetFactory, kafka_bootstrap: str
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)
    batch = [reading(i) for i in range(5)]
    url = f"/datasets/{dataset.slug}/records"

    first = await ingest.client.post(url, json=batch, headers=publisher.headers)
    again = await ingest.client.post(url, json=[*batch, batch[0]], headers=publisher.headers)

    assert first.json()["accepted"] == 5
    assert again.json()["accepted"] == 0
    assert again.json()["duplicates"] == 6
    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=6, timeout_s=5)
    assert len(records) == 5


async def test_personal_records_carry_their_subject(
    ingest: Ingest, publisher: Publisher, register_dataset: DatasetFactory, kafka_bootstrap: str
) -> None:
    dataset = await register_dataset(
        publisher.org_id, access_level="personal", subject_field="household"
    )
    await _ready(ingest, publisher, dataset.slug)
    response = await ingest.client.post(
        f"/datasets/{dataset.slug}/records",
        json=[reading(0, household="hh-42"), reading(1)],
        headers=publisher.headers,
    )
    answer = response.json()
    assert answer["accepted"] == 1
    assert answer["rejected"][0]["errors"][0]["path"] == "/household"
    (record,) = await read_topic(kafka_bootstrap, dataset.data_topic, expect=1)
    assert _headers(record)["ce_subject"] == "hh-42"


async def test_a_new_major_version_switches_topic_and_retirement_refuses(
    ingest: Ingest,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    producer: Producer,
    kafka_settings: KafkaSettings,
    kafka_bootstrap: str,
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)
    v2_topic = f"{dataset.data_topic}.v2"
    await ensure_topics(kafka_settings, [TopicSpec(v2_topic, 1)])
    v2_schema = {
        **METER_SCHEMA,
        "properties": {**METER_SCHEMA["properties"], "kwh": {"type": "integer"}},
    }
    await producer.send_event(
        SchemaVersionAdded(
            dataset_id=dataset.dataset_id,
            slug=dataset.slug,
            version=2,
            major=2,
            topic_name=v2_topic,
            json_schema=v2_schema,
        )
    )
    await until_known(ingest, dataset.slug, version=2)
    url = f"/datasets/{dataset.slug}/records"

    response = await ingest.client.post(
        url, json=[reading(0, kwh=3), reading(1, kwh=2.5)], headers=publisher.headers
    )

    answer = response.json()
    assert (answer["accepted"], answer["schema_version"]) == (1, 2)
    (record,) = await read_topic(kafka_bootstrap, v2_topic, expect=1)
    assert _headers(record)["ce_type"] == f"org.datapolis.record.{dataset.slug}.v2"

    await producer.send_event(DatasetRetired(dataset_id=dataset.dataset_id, slug=dataset.slug))
    await eventually(lambda: ingest.app.state.registry.get(dataset.slug).retired, timeout_s=20)
    refused = await ingest.client.post(url, json=[reading(2, kwh=1)], headers=publisher.headers)
    _problem(refused, 409, "dataset-retired")


async def test_batch_counts_reach_the_ingest_events(
    ingest: Ingest,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    ingest_events_tail: TopicTail,
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)
    before = await _records_counted(ingest)
    url = f"/datasets/{dataset.slug}/records"
    for _ in range(3):
        await ingest.client.post(
            url, json=[reading(0), reading(1), reading(2, kwh=-1)], headers=publisher.headers
        )

    totals: dict[str, int] = {}

    async def counted() -> bool:
        records = await ingest_events_tail.read()
        events = [
            orjson.loads(r.value)["data"] for r in records if r.key == dataset.dataset_id.encode()
        ]
        totals["accepted"] = sum(e["accepted"] for e in events)
        totals["rejected"] = sum(e["rejected"] for e in events)
        totals["events"] = len(events)
        return totals["accepted"] == 6 and totals["rejected"] == 3

    await eventually(counted, timeout_s=20, interval_s=0.5)
    # Aggregated per interval, not one event per request.
    assert totals["events"] < 3 or ingest.settings.stats_interval_s < 0.1
    # The same counts on /metrics, at once (what dashboards and alerts read).
    after = await _records_counted(ingest)
    assert after[("http", "accepted")] - before[("http", "accepted")] == 6
    assert after[("http", "rejected")] - before[("http", "rejected")] == 3
    assert after[("http", "duplicate")] == before[("http", "duplicate")]


async def _records_counted(ingest: Ingest) -> dict[tuple[str, str], float]:
    """``datapolis_ingest_records_total`` by (channel, outcome), from /metrics."""
    page = await ingest.client.get("/metrics")
    assert page.status_code == 200, page.text
    return {
        (sample.labels["channel"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(page.text)
        if family.name == "datapolis_ingest_records"
        for sample in family.samples
        if sample.name == "datapolis_ingest_records_total"
    }
