"""What consent takes from a dataset's JSON Schema as the fields an agreement
may ask for, and how it answers about a dataset (no database: pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from datapolis_consent.datasets import (
    Dataset,
    DatasetIsOpen,
    DatasetIsRetired,
    UnknownFields,
    check_fields,
    fields_of,
    require_agreement_possible,
)
from datapolis_consent.fields import MAX_PATH_DEPTH, schema_fields

METER: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "meter_id": {"type": "string"},
        "kwh": {"type": "number"},
        "household": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "address": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "postcode": {"type": "string"}},
                },
            },
        },
        "readings": {"type": "array", "items": {"type": "object", "properties": {"v": {}}}},
    },
    "required": ["meter_id", "kwh"],
}


def test_top_level_fields_are_the_root_properties_in_order() -> None:
    assert schema_fields(METER).fields == ("meter_id", "kwh", "household", "readings")


def test_nested_objects_give_dotted_paths_after_the_top_level_names() -> None:
    assert schema_fields(METER).paths == (
        "meter_id",
        "kwh",
        "household",
        "readings",
        "household.id",
        "household.address",
        "household.address.city",
        "household.address.postcode",
    )


def test_arrays_are_one_field_whatever_their_items() -> None:
    assert not [p for p in schema_fields(METER).paths if p.startswith("readings.")]


def test_combined_subschemas_add_their_properties_once() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {}},
        "allOf": [{"properties": {"b": {}, "a": {}}}],
        "anyOf": [{"properties": {"c": {}}}, {"properties": {"d": {"properties": {"e": {}}}}}],
        "oneOf": [{"properties": {"f": {}}}],
    }
    found = schema_fields(schema)
    assert found.fields == ("a", "b", "c", "d", "f")
    assert found.paths == ("a", "b", "c", "d", "f", "d.e")


def test_local_references_are_followed_and_recursion_ends() -> None:
    schema = {
        "type": "object",
        "$defs": {
            "place": {
                "type": "object",
                "properties": {"city": {}, "near": {"$ref": "#/$defs/place"}},
            }
        },
        "properties": {"where": {"$ref": "#/$defs/place"}, "id": {}},
    }
    found = schema_fields(schema)
    assert found.fields == ("where", "id")
    assert found.paths == ("where", "id", "where.city", "where.near")


def test_a_dotted_name_stays_a_field_but_gets_no_ambiguous_nested_path() -> None:
    schema = {
        "type": "object",
        "properties": {"a.b": {"properties": {"c": {}}}, "x": {"properties": {"y.z": {}}}},
    }
    found = schema_fields(schema)
    assert found.fields == ("a.b", "x")
    assert found.paths == ("a.b", "x")


def test_deep_nesting_is_cut_at_the_path_depth_limit() -> None:
    schema: dict[str, Any] = {"properties": {}}
    inner = schema
    for _ in range(MAX_PATH_DEPTH + 5):
        child: dict[str, Any] = {"properties": {}}
        inner["properties"]["n"] = child
        inner = child
    longest = max(schema_fields(schema).paths, key=len)
    assert longest.count(".") + 1 == MAX_PATH_DEPTH


def test_unusable_keywords_are_ignored_rather_than_failing() -> None:
    schema = {"properties": {"a": True, 1: {}}, "allOf": "nonsense", "anyOf": [3], "$ref": 7}
    assert schema_fields(schema).fields == ("a",)
    assert schema_fields({"type": "object"}).fields == ()


def dataset(**overrides: Any) -> Dataset:
    found = schema_fields(METER)
    values: dict[str, Any] = {
        "dataset_id": "ds-1",
        "slug": "meters",
        "publisher_id": "org-1",
        "access_level": "shared",
        "key_field": "meter_id",
        "subject_field": None,
        "schema_version": 2,
        "fields": found.fields,
        "field_paths": found.paths,
        "retired_at": None,
        **overrides,
    }
    return Dataset(**values)


def test_fields_of_a_dataset_are_its_current_schemas_top_level_fields() -> None:
    assert fields_of(dataset()) == ("meter_id", "kwh", "household", "readings")


def test_fields_in_the_schema_pass_each_once_in_the_order_asked() -> None:
    asked = ["kwh", "household.address.city", "kwh", "meter_id"]
    assert check_fields(dataset(), asked) == ("kwh", "household.address.city", "meter_id")


def test_fields_not_in_the_schema_are_all_listed() -> None:
    with pytest.raises(UnknownFields) as refused:
        check_fields(dataset(), ["kwh", "iban", "household.name", "iban"])
    assert refused.value.code == "unknown-fields"
    assert refused.value.fields == ["iban", "household.name"]
    assert refused.value.extra["fields"] == ["iban", "household.name"]
    assert refused.value.extra["schema_version"] == 2


def test_without_a_known_schema_every_field_is_unknown() -> None:
    bare = dataset(schema_version=None, fields=(), field_paths=())
    with pytest.raises(UnknownFields) as refused:
        check_fields(bare, ["kwh"])
    assert refused.value.fields == ["kwh"]


def test_an_open_dataset_needs_no_agreement() -> None:
    with pytest.raises(DatasetIsOpen) as refused:
        require_agreement_possible(dataset(access_level="open"))
    assert refused.value.code == "dataset-is-open"
    assert "need no agreement" in refused.value.message


def test_a_retired_dataset_takes_no_agreement() -> None:
    with pytest.raises(DatasetIsRetired) as refused:
        require_agreement_possible(dataset(retired_at=datetime.now(UTC)))
    assert refused.value.code == "dataset-retired"


@pytest.mark.parametrize("level", ["shared", "personal"])
def test_shared_and_personal_datasets_take_agreements(level: str) -> None:
    subject = dataset(access_level=level)
    assert require_agreement_possible(subject) is subject
    assert subject.personal == (level == "personal")
