"""Pure rules of the catalog: dataset schemas, cursors, live-stats arithmetic."""

from __future__ import annotations

from typing import Any

import pytest

from datapolis_catalog.discovery import decode_cursor, encode_cursor
from datapolis_catalog.schema_rules import check_dataset_schema
from datapolis_catalog.stats import WindowCounts, summarise, window_start, window_starts
from datapolis_shared.errors import InvalidInput

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"meter": {"type": "string"}, "household": {"type": "string"}},
    "required": ["meter", "household"],
}


def test_a_valid_dataset_schema_passes() -> None:
    check_dataset_schema(SCHEMA, key_field="meter", subject_field="household")


@pytest.mark.parametrize(
    ("schema", "key_field", "subject_field", "code"),
    [
        ({"type": "object", "properties": {"a": {"type": 5}}}, None, None, "invalid-json-schema"),
        (
            {"type": "object", "properties": {}, "minProperties": -1},
            None,
            None,
            "invalid-json-schema",
        ),
        (
            {**SCHEMA, "$schema": "http://json-schema.org/draft-07/schema#"},
            None,
            None,
            "invalid-json-schema",
        ),
        ({"type": "array", "items": {}}, None, None, "schema-not-an-object"),
        (SCHEMA, "serial", None, "key-field-not-in-schema"),
        (SCHEMA, None, "person", "subject-field-not-in-schema"),
        ({**SCHEMA, "required": ["meter"]}, None, "household", "subject-field-not-required"),
    ],
)
def test_dataset_schema_refusals_have_codes(
    schema: dict[str, Any], key_field: str | None, subject_field: str | None, code: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_dataset_schema(schema, key_field=key_field, subject_field=subject_field)
    assert refused.value.code == code


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(0.25, "conso-elec")) == (0.25, "conso-elec")


@pytest.mark.parametrize(
    "cursor", ["", "!!!", "bm90IGpzb24", encode_cursor(0, "x")[:-3], "WzEsMl0"]
)
def test_a_forged_cursor_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        decode_cursor(cursor)
    assert refused.value.code == "invalid-cursor"


def test_windows_are_aligned() -> None:
    assert window_start(125.0, 60) == 120.0
    assert window_starts(125.0, 60, 180) == [120.0, 60.0, 0.0]


def test_summary_of_windows() -> None:
    windows = {
        600.0: WindowCounts(accepted=90, rejected=10),  # the current minute
        540.0: WindowCounts(accepted=60, rejected=0),  # the previous one
        0.0: WindowCounts(accepted=50, rejected=40),
    }
    # 15 s into the current window: it counts fully, the previous one for 3/4.
    stats = summarise("d", windows, now=615.0, size_s=60, last_record_at=610.0)
    assert stats.records_per_minute == 90 + 45
    assert stats.accepted_last_hour == 200
    assert stats.rejected_last_hour == 50
    assert stats.rejection_rate == 0.2
    assert stats.last_record_at is not None
    assert stats.last_record_at.timestamp() == 610.0


def test_summary_without_records() -> None:
    stats = summarise("d", {}, now=10.0, size_s=60, last_record_at=None)
    assert (stats.records_per_minute, stats.rejection_rate, stats.last_record_at) == (0, None, None)
