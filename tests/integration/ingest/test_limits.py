"""The limits a record must respect (nesting depth, size against the dataset
topic's max.message.bytes): a record over one is rejected on its own, with a
stable code and a dead letter; its batch's other records go through, and so
do the writes that follow."""

from __future__ import annotations

from typing import Any

import orjson

from datapolis_shared.kafka import TopicSpec, converge_topics
from datapolis_shared.settings import KafkaSettings
from tests.integration.ingest.conftest import (
    DatasetFactory,
    Ingest,
    Publisher,
    reading,
    until_key_works,
    until_known,
)
from tests.kafka_util import TopicTail, eventually, read_topic

# The documented limits (README, services/ingest/README.md).
MAX_RECORD_DEPTH = 64
# The lesser of Kafka's default max.message.bytes and the producer's
# max_request_size.
MAX_RECORD_BYTES = 1_048_576


def nested(depth: int) -> Any:
    """A value ``depth`` containers deep."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


async def _ready(ingest: Ingest, who: Publisher, slug: str) -> None:
    await until_known(ingest, slug, version=1)
    await until_key_works(ingest, who)


async def _letters(tail: TopicTail, dataset_id: str, expect: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        records = await tail.read()
        found[:] = [orjson.loads(r.value)["data"] for r in records if r.key == dataset_id.encode()]
        return len(found) >= expect

    await eventually(enough, timeout_s=20, interval_s=0.5)
    return found


async def test_a_record_nested_too_deep_is_rejected_alone_with_its_code(
    ingest: Ingest,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    kafka_bootstrap: str,
    ingest_rejected_tail: TopicTail,
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)
    good = [reading(0), reading(1)]
    # Past what the serializer handles (about 254) but not the parser (1024).
    deep = reading(2, household=nested(300))
    at_limit = reading(3, extra=nested(MAX_RECORD_DEPTH - 1))

    response = await ingest.client.post(
        f"/datasets/{dataset.slug}/records",
        content=b"["
        + b",".join(
            [orjson.dumps(good[0]), _deep_json(deep), orjson.dumps(good[1]), _deep_json(at_limit)]
        )
        + b"]",
        headers={**publisher.headers, "content-type": "application/json"},
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 3
    (rejected,) = [r for r in answer["rejected"] if r["index"] == 1]
    assert rejected["code"] == "record-too-deep"
    # At the limit is allowed (then judged by the schema, which lets "extra" be).
    assert [r["index"] for r in answer["rejected"]] == [1]
    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=3)
    assert {orjson.loads(r.value)["id"] for r in records} == {
        good[0]["id"],
        good[1]["id"],
        at_limit["id"],
    }
    (letter,) = await _letters(ingest_rejected_tail, dataset.dataset_id, expect=1)
    assert letter["code"] == "record-too-deep"
    assert letter["payload"]["id"] == deep["id"]  # kept, clipped to a few levels


def _deep_json(record: dict[str, Any]) -> bytes:
    """JSON text of any depth (orjson serializes only about 254 levels)."""
    parts = []
    for key, field in record.items():
        depth, value = 0, field
        while isinstance(value, dict) and set(value) == {"a"}:
            value = value["a"]
            depth += 1
        inner = orjson.dumps(value)
        parts.append(orjson.dumps(key) + b":" + b'{"a":' * depth + inner + b"}" * depth)
    return b"{" + b",".join(parts) + b"}"


async def test_ndjson_lines_nested_too_deep_are_rejected_alone(
    ingest: Ingest,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    kafka_bootstrap: str,
    ingest_rejected_tail: TopicTail,
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)
    good = reading(0)
    lines = [
        orjson.dumps(good),
        b"[" * 300 + b"]" * 300,  # parsed, then refused
        b"[" * 2000 + b"]" * 2000,  # too deep even to parse
    ]

    response = await ingest.client.post(
        f"/datasets/{dataset.slug}/records",
        content=b"\n".join(lines),
        headers={**publisher.headers, "content-type": "application/x-ndjson"},
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 1
    assert [(r["line"], r["code"]) for r in answer["rejected"]] == [
        (2, "record-too-deep"),
        (3, "record-too-deep"),
    ]
    letters = await _letters(ingest_rejected_tail, dataset.dataset_id, expect=2)
    assert sorted(len(letter["payload"]) for letter in letters) == [600, 4000]  # the raw text
    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=1)
    assert [r.value for r in records] == [lines[0]]


async def test_a_body_too_deep_to_parse_is_refused_with_its_code(
    ingest: Ingest, publisher: Publisher, register_dataset: DatasetFactory
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)

    response = await ingest.client.post(
        f"/datasets/{dataset.slug}/records",
        content=b"[" * 5000 + b"]" * 5000,
        headers={**publisher.headers, "content-type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "body-too-deep"


async def test_a_record_too_large_for_kafka_is_rejected_and_the_next_write_succeeds(
    ingest: Ingest,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    kafka_bootstrap: str,
    ingest_rejected_tail: TopicTail,
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await _ready(ingest, publisher, dataset.slug)
    # Just under the 1 MiB body limit: with its headers, over what the topic
    # (max.message.bytes, 1 MiB + 12 by default) and the producer take.
    big = reading(0, meter_id="m-big", household="x" * (1024 * 1024 - 300))
    body = orjson.dumps([big])
    assert len(body) < 1024 * 1024

    refused = await ingest.client.post(
        f"/datasets/{dataset.slug}/records",
        content=body,
        headers={**publisher.headers, "content-type": "application/json"},
    )

    assert refused.status_code == 200, refused.text  # not a retryable 503
    answer = refused.json()
    assert answer["accepted"] == 0
    assert answer["rejected"][0]["code"] == "record-too-large"
    assert str(MAX_RECORD_BYTES) in answer["rejected"][0]["errors"][0]["message"]

    # The next write to the same partition (same key) goes through.
    after = reading(1, meter_id="m-big")
    accepted = await ingest.client.post(
        f"/datasets/{dataset.slug}/records", json=[after], headers=publisher.headers
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] == 1
    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=1)
    assert [orjson.loads(r.value)["id"] for r in records] == [after["id"]]

    (letter,) = await _letters(ingest_rejected_tail, dataset.dataset_id, expect=1)
    assert letter["code"] == "record-too-large"
    assert letter["payload"]["truncated"] is True  # a dead letter that fits


async def test_the_record_size_limit_is_the_topics_own(
    ingest: Ingest,
    publisher: Publisher,
    register_dataset: DatasetFactory,
    kafka_settings: KafkaSettings,
    kafka_bootstrap: str,
) -> None:
    dataset = await register_dataset(publisher.org_id)
    await converge_topics(
        kafka_settings, [TopicSpec(dataset.data_topic, 3, {"max.message.bytes": "20000"})]
    )
    await _ready(ingest, publisher, dataset.slug)
    small = reading(0, meter_id="m-1")
    large = reading(1, meter_id="m-1", household="x" * 30_000)

    response = await ingest.client.post(
        f"/datasets/{dataset.slug}/records", json=[small, large], headers=publisher.headers
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 1
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [(1, "record-too-large")]
    assert "20000" in answer["rejected"][0]["errors"][0]["message"]
    records = await read_topic(kafka_bootstrap, dataset.data_topic, expect=1)
    assert [orjson.loads(r.value)["id"] for r in records] == [small["id"]]
