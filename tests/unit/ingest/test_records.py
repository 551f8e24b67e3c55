"""The pure parts of ingest: validators, record-id windows, parsing, and how a
batch is sorted into Kafka records and rejections."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from datapolis_ingest.dedup import RecordIdWindow
from datapolis_ingest.records import (
    Malformed,
    Preparer,
    bytes_to_send,
    parse_json_batch,
    parse_ndjson,
)
from datapolis_ingest.registry import Dataset, LazyValidator
from datapolis_ingest.validation import (
    MAX_ERRORS_PER_RECORD,
    FieldError,
    SchemaUnusable,
    compile_schema,
)
from datapolis_shared.errors import InvalidInput

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "tags": {"type": "object", "properties": {"zone": {"enum": ["a", "b"]}}},
    },
    "required": ["meter_id", "kwh"],
}


def _dataset(**overrides: Any) -> Dataset:
    values: dict[str, Any] = {
        "dataset_id": "ds-1",
        "slug": "meters",
        "publisher_id": "org-1",
        "access_level": "open",
        "key_field": "meter_id",
        "subject_field": None,
        "retired": False,
        "topic": "data.meters",
        "schema_version": 3,
        "major": 1,
        "schema": LazyValidator(orjson.dumps(SCHEMA)),
        "ce_source": "/datapolis/ingest/meters",
        "ce_type": "org.datapolis.record.meters.v1",
        "dataschema": "http://catalog/datasets/meters/schemas/3",
    }
    values.update(overrides)
    return Dataset(**values)


def test_validator_names_the_field_and_the_rule() -> None:
    validate = compile_schema(SCHEMA)
    assert validate({"meter_id": "m", "kwh": 1}) is None
    assert validate({"meter_id": "m", "kwh": -1}) == [
        FieldError("/kwh", "-1 is less than the minimum of 0")
    ]
    errors = validate({"meter_id": "m", "kwh": 1, "tags": {"zone": "c"}})
    assert errors is not None
    assert [e.path for e in errors] == ["/tags/zone"]
    missing = validate({"kwh": 1})
    assert missing is not None
    assert missing[0].path == ""
    assert "meter_id" in missing[0].message


def test_validator_reports_every_error_of_a_record() -> None:
    validate = compile_schema(SCHEMA)
    errors = validate({"kwh": -1, "tags": {"zone": "c"}, "id": 7})
    assert errors is not None
    assert sorted(e.path for e in errors) == ["", "/id", "/kwh", "/tags/zone"]


def test_errors_per_record_are_bounded() -> None:
    validate = compile_schema({"type": "object", "additionalProperties": {"type": "integer"}})
    errors = validate({f"f{i}": "x" for i in range(100)})
    assert errors is not None
    assert len(errors) == MAX_ERRORS_PER_RECORD


def test_pointer_escapes_per_rfc_6901() -> None:
    validate = compile_schema({"properties": {"a/b~c": {"type": "integer"}}})
    assert validate({"a/b~c": "x"}) == [FieldError("/a~1b~0c", '"x" is not of type "integer"')]


def test_formats_are_asserted() -> None:
    validate = compile_schema({"properties": {"at": {"type": "string", "format": "date-time"}}})
    assert validate({"at": "2025-03-01T12:00:00+00:00"}) is None
    errors = validate({"at": "yesterday"})
    assert errors is not None
    assert errors[0].path == "/at"


def test_2020_12_keywords_are_enforced() -> None:
    validate = compile_schema(
        {"type": "object", "properties": {"pair": {"prefixItems": [{"type": "string"}]}}}
    )
    assert validate({"pair": ["a", 1]}) is None
    assert validate({"pair": [1]}) == [FieldError("/pair/0", '1 is not of type "string"')]


def test_a_remote_reference_is_unusable_not_fetched() -> None:
    with pytest.raises(SchemaUnusable, match=r"example\.org"):
        compile_schema({"$ref": "https://example.org/schemas/meter.json"})


def test_a_broken_schema_is_unusable_not_a_crash() -> None:
    with pytest.raises(SchemaUnusable):
        compile_schema({"type": "no-such-type"})


def test_window_remembers_acknowledged_ids_only() -> None:
    window = RecordIdWindow(window_s=10, max_ids=100)
    window.reserve("a")
    assert window.is_known("a", now=0)
    window.release(["a"])
    assert not window.is_known("a", now=0)
    window.reserve("a")
    window.commit(["a"], now=0)
    assert window.is_known("a", now=9.9)
    assert not window.is_known("a", now=10.1)


def test_window_is_bounded_oldest_first() -> None:
    window = RecordIdWindow(window_s=1000, max_ids=3)
    window.commit(["a", "b", "c", "d"], now=0)
    assert len(window) == 3
    assert not window.is_known("a", now=1)
    assert window.is_known("d", now=1)


def test_window_keeps_a_recommitted_id_over_older_ones() -> None:
    window = RecordIdWindow(window_s=10, max_ids=2)
    window.commit(["a", "b"], now=0)
    window.commit(["a"], now=5)  # seen again: now the newest
    window.commit(["c"], now=5)  # over the bound: the oldest, "b", goes
    assert window.is_known("a", now=6)
    assert not window.is_known("b", now=6)
    assert window.is_known("c", now=6)
    assert not window.is_known("a", now=15.1)  # expired: 10 s after its last commit


def test_json_batch_position_of_a_syntax_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_json_batch(b'[{"a": 1},\n {"a": }]')
    assert caught.value.code == "malformed-json"
    assert (caught.value.extra["line"], caught.value.extra["column"]) == (2, 8)
    assert parse_json_batch(b' {"a": 1}\n') == ([{"a": 1}], [b'{"a": 1}'])
    with pytest.raises(InvalidInput):
        parse_json_batch(b"42")


def test_json_batch_the_span_scanner_refuses_is_parsed_all_the_same() -> None:
    # Nesting orjson still parses but msgspec's scanner refuses: no bytes to
    # forward, so the records are serialized again, and nothing is refused.
    deep = b"[" * 1000 + b"]" * 1000
    body = b'[{"id": "a"}, {"deep": ' + deep + b"}]"
    items, raws = parse_json_batch(body)
    assert raws is None
    assert len(items) == 2
    assert items[0] == {"id": "a"}


def test_ndjson_keeps_lines_and_marks_malformed_ones() -> None:
    items, raws = parse_ndjson(b'{"a": 1}\n\n{oops\n {"b": 2} \n')
    assert items[0] == {"a": 1}
    assert items[2] == {"b": 2}
    assert isinstance(items[1], Malformed)
    assert items[1].line == 3
    assert raws == [b'{"a": 1}', None, b'{"b": 2}']


def test_prepare_sorts_records_and_builds_binary_cloudevents() -> None:
    dataset = _dataset()
    preparer = Preparer(dataset, dataset.accepting(), producer="org-1", id_prefix="batch-")
    window = RecordIdWindow(window_s=60, max_ids=100)
    items = [
        {"id": "r1", "meter_id": "m-1", "kwh": 1},
        {"meter_id": "m-2", "kwh": "x"},
        {"meter_id": "m-3", "kwh": 2},
        {"id": "r1", "meter_id": "m-1", "kwh": 1},
        [1, 2],
        {"id": {"nested": 1}, "meter_id": "m-4", "kwh": 2},
    ]

    prepared = preparer.prepare(items, window, now=0)

    assert [r.index for r in prepared.rejections] == [1, 4, 5]
    assert prepared.duplicates == 1
    assert prepared.reserved_ids == ["r1"]
    first, second = prepared.outgoing
    assert first.topic == "data.meters"
    assert first.key == b"m-1"
    assert orjson.loads(first.value) == items[0]
    headers = dict(first.headers)
    assert headers["ce_id"] == b"r1"
    assert headers["ce_type"] == b"org.datapolis.record.meters.v1"
    assert headers["ce_producer"] == b"org-1"
    assert headers["ce_dataschema"] == b"http://catalog/datasets/meters/schemas/3"
    assert dict(second.headers)["ce_id"] == b"batch-2"


def test_personal_records_need_their_subject() -> None:
    dataset = _dataset(access_level="personal", subject_field="household", key_field=None)
    preparer = Preparer(dataset, dataset.accepting(), producer="org-1", id_prefix="b-")
    window = RecordIdWindow(window_s=60, max_ids=100)
    prepared = preparer.prepare(
        [{"meter_id": "m", "kwh": 1, "household": "h1"}, {"meter_id": "m", "kwh": 1}],
        window,
        now=0,
    )
    (record,) = prepared.outgoing
    assert dict(record.headers)["ce_subject"] == b"h1"
    assert record.key is None
    assert prepared.rejections[0].errors[0].path == "/household"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":"x","a":2,"b":3}',
        b'{"a" :"x","a":2,"b":3}',  # a member the colon count would miss
        b'{"a":"x","a":2,"b":"\\u0022:"}',  # an escape spelling a key's end
        b'{"n":{"a":"x","a":2},"b":3}',
    ],
)
def test_bytes_naming_a_key_twice_are_never_sent_as_they_came(raw: bytes) -> None:
    item = orjson.loads(raw)
    assert bytes_to_send(raw, item) == orjson.dumps(item)


def test_bytes_without_repeats_are_sent_as_they_came() -> None:
    raw = b'{"b": 1.50, "a": [1e2, {"c": "d: e"}]}'
    assert bytes_to_send(raw, orjson.loads(raw)) is raw
