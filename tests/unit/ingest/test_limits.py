"""The limits on a record, and dead letters that are written whatever the
record holds."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord

from datapolis_ingest.dedup import RecordIdWindow
from datapolis_ingest.limits import RecordSizeLimits, size_error
from datapolis_ingest.records import Preparer, Rejection, dead_letters, parse_json_batch
from datapolis_ingest.validation import FieldError
from datapolis_shared.errors import Unavailable
from datapolis_shared.kafka import dead_letter_record
from datapolis_shared.limits import MAX_RECORD_DEPTH, clipped, exceeds_depth
from tests.unit.ingest.test_records import _dataset


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_depth_counts_containers() -> None:
    assert not exceeds_depth(1, 0)
    assert not exceeds_depth({"a": 1}, 1)
    assert exceeds_depth({"a": {"b": 1}}, 1)
    assert not exceeds_depth(nested(MAX_RECORD_DEPTH), MAX_RECORD_DEPTH)
    assert exceeds_depth(nested(MAX_RECORD_DEPTH + 1), MAX_RECORD_DEPTH)
    # As deep as the parser goes: no recursion error.
    assert exceeds_depth(orjson.loads(b"[" * 1024 + b"]" * 1024), MAX_RECORD_DEPTH)


def test_clipped_is_always_serializable() -> None:
    deep = orjson.loads(b'{"a":' * 1000 + b"1" + b"}" * 1000)
    assert orjson.loads(orjson.dumps(clipped(deep, 3))) == {"a": {"a": {"a": "…"}}}


def test_a_record_too_deep_is_refused_in_the_batch_others_stay() -> None:
    body = b'[{"meter_id": "m", "kwh": 1}, {"meter_id": "m", "kwh": 1, "x": ' + (
        b"[" * 300 + b"]" * 300 + b"}]"
    )
    items, _ = parse_json_batch(body)
    prepared = Preparer(_dataset(), _dataset().accepting(), producer="o", id_prefix="b-").prepare(
        items, RecordIdWindow(window_s=60, max_ids=10), 0
    )
    assert len(prepared.outgoing) == 1
    (rejection,) = prepared.rejections
    assert (rejection.index, rejection.code) == (1, "record-too-deep")


def test_a_record_too_large_for_the_topic_is_refused_in_the_batch() -> None:
    preparer = Preparer(
        _dataset(), _dataset().accepting(), producer="o", id_prefix="b-", max_record_bytes=10_000
    )
    prepared = preparer.prepare(
        [{"meter_id": "m", "kwh": 1}, {"meter_id": "m", "kwh": 1, "pad": "x" * 20_000}],
        RecordIdWindow(window_s=60, max_ids=10),
        0,
    )
    assert len(prepared.outgoing) == 1
    assert [(r.index, r.code) for r in prepared.rejections] == [(1, "record-too-large")]


def test_size_error_counts_key_and_headers() -> None:
    assert size_error(b"x" * 100, b"k", [("h", b"v")], 10_000) is None
    assert size_error(b"x" * 100, b"k" * 20_000, [], 10_000) is not None
    assert size_error(b"x" * 3_000, None, [("h", b"v" * 8_000)], 10_000) is not None


@pytest.mark.parametrize(
    "payload",
    [
        "lone \ud800 surrogate",
        {"\udfff": 1},
        orjson.loads(b"[" * 1000 + b"]" * 1000),
        {1: "non-string key"},
        "x" * 2_000_000,
    ],
)
def test_a_dead_letter_is_written_whatever_the_payload(payload: Any) -> None:
    (letter,) = dead_letters(
        [Rejection(0, [FieldError("", "refused \ud800")], payload, code="record-too-deep")],
        _dataset(),
        producer_org_id="org-1",
        channel="http",
    )
    assert len(letter.value) < 300 * 1024
    assert orjson.loads(letter.value)["data"]["code"] == "record-too-deep"


def test_a_dead_lettered_raw_record_is_cut_to_fit() -> None:
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic="raw.x",
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=b"k" * 100_000,
        value=b"v" * 2_000_000,
        checksum=None,
        serialized_key_size=100_000,
        serialized_value_size=2_000_000,
        headers=[("big", b"h" * 100_000)],
    )
    letter = dead_letter_record(record, consumer="c", error="e")
    headers = dict(letter.headers)
    assert len(letter.value) + len(letter.key or b"") < 300 * 1024
    assert "big" not in headers
    assert headers["dl_truncated"] == b"value:2000000,key:100000,headers:100003"


async def test_the_size_limit_is_the_lesser_and_survives_kafka_being_down() -> None:
    answers: list[int | None | Exception] = [2_000_000, Unavailable("down")]

    async def read(topic: str) -> int | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    limits = RecordSizeLimits(read, max_request_size=1_048_576)
    assert await limits.for_topic("data.a") == 1_048_576
    limits._known["data.a"] = (0.0, 500_000)  # expired: read again, Kafka down
    assert await limits.for_topic("data.a") == 500_000


@pytest.mark.parametrize("flat", [0, 1, 200])
@pytest.mark.parametrize("depth", [MAX_RECORD_DEPTH - 1, MAX_RECORD_DEPTH, MAX_RECORD_DEPTH + 1])
def test_a_batch_screen_never_misses_a_record_too_deep(flat: int, depth: int) -> None:
    """The bracket count that spares the walk is a bound, never a guess."""
    deep = b'{"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    body = b"[" + b",".join([b'{"s": "[{[{"}'] * flat + [deep, b"1", b'"]]]"']) + b"]"

    items, _ = parse_json_batch(body)

    refused = [type(item).__name__ for item in items if not isinstance(item, dict | int | str)]
    assert refused == (["OverLimit"] if depth > MAX_RECORD_DEPTH else [])
