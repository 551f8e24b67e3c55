"""The schema compatibility rule: a new version must accept every record the
previous one accepted and keep every field its consumers read."""

from __future__ import annotations

from typing import Any

import pytest

from datapolis_catalog.compatibility import backward_incompatibilities, pointer


def obj(
    properties: dict[str, Any], required: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema.update({"$defs" if k == "defs" else k: v for k, v in extra.items()})
    if required is not None:
        schema["required"] = required
    return schema


BASE = obj(
    {
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0, "maximum": 1000},
        "status": {"type": "string", "enum": ["ok", "estimated", "missing"]},
        "note": {"type": ["string", "null"], "maxLength": 200, "minLength": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": obj({"zip": {"type": "string", "pattern": "^[0-9]{5}$"}}),
    },
    required=["meter_id", "kwh"],
)


def changes(old: Any, new: Any, **kwargs: Any) -> list[tuple[str, str]]:
    return [(c.path, c.change) for c in backward_incompatibilities(old, new, **kwargs)]


def with_prop(name: str, schema: Any, base: dict[str, Any] = BASE) -> dict[str, Any]:
    return {**base, "properties": {**base["properties"], name: schema}}


# -- compatible evolutions ------------------------------------------------------


def test_identical_schema_is_compatible() -> None:
    assert changes(BASE, BASE) == []


def test_adding_an_optional_property_is_compatible() -> None:
    assert changes(BASE, with_prop("voltage", {"type": "number"})) == []


def test_making_a_required_property_optional_is_compatible() -> None:
    assert changes(BASE, {**BASE, "required": ["meter_id"]}) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"type": "integer"}, {"type": "number"}),
        ({"type": "string"}, {"type": ["string", "null"]}),
        ({"type": "string"}, {}),
        ({"type": "string", "enum": ["a"]}, {"type": "string", "enum": ["a", "b"]}),
        ({"type": "string", "enum": ["a"]}, {"type": "string"}),
        ({"type": "string", "maxLength": 10}, {"type": "string", "maxLength": 20}),
        ({"type": "string", "maxLength": 10}, {"type": "string"}),
        ({"type": "string", "minLength": 5}, {"type": "string", "minLength": 1}),
        ({"type": "number", "maximum": 10}, {"type": "number", "maximum": 11}),
        ({"type": "number", "minimum": 0}, {"type": "number", "minimum": -1}),
        ({"type": "number", "multipleOf": 2}, {"type": "number", "multipleOf": 1}),
        ({"type": "string", "pattern": "^a"}, {"type": "string"}),
        ({"type": "string", "format": "email"}, {"type": "string"}),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, {}),
        ({"type": "string", "description": "old"}, {"type": "string", "description": "new"}),
        ({"type": "string", "const": "x"}, {"type": "string", "enum": ["x", "y"]}),
    ],
)
def test_widening_a_property_is_compatible(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert changes(obj({"p": old}), obj({"p": new})) == []


def test_opening_additional_properties_is_compatible() -> None:
    closed = {**BASE, "additionalProperties": False}
    assert changes(closed, BASE) == []
    assert changes(closed, {**BASE, "additionalProperties": True}) == []


def test_local_refs_are_followed() -> None:
    old = obj({"a": {"$ref": "#/$defs/reading"}}, defs={"reading": {"type": "integer"}})
    widened = obj({"a": {"$ref": "#/$defs/reading"}}, defs={"reading": {"type": "number"}})
    narrowed = obj({"a": {"$ref": "#/$defs/reading"}}, defs={"reading": {"type": "string"}})
    assert changes(old, widened) == []
    assert changes(old, narrowed) == [("/properties/a", "type-changed")]


def test_recursive_refs_terminate() -> None:
    node = obj({"child": {"$ref": "#"}, "name": {"type": "string"}})
    assert changes(node, node) == []
    assert changes(node, with_prop("extra", {"type": "string"}, node)) == []


# -- incompatible evolutions ----------------------------------------------------


def test_new_required_property_without_default_is_refused() -> None:
    new = with_prop("unit", {"type": "string"})
    new["required"] = [*BASE["required"], "unit"]
    found = backward_incompatibilities(BASE, new)
    assert [(c.path, c.change) for c in found] == [("/properties/unit", "required-added")]
    assert "'unit'" in found[0].detail


def test_new_required_property_with_a_default_is_refused() -> None:
    # JSON Schema's default is an annotation: a record of the previous shape,
    # without "unit", fails the new version whatever the default says.
    new = with_prop("unit", {"type": "string", "default": "kWh"})
    new["required"] = [*BASE["required"], "unit"]
    found = backward_incompatibilities(BASE, new)
    assert [(c.path, c.change) for c in found] == [("/properties/unit", "required-added")]
    assert "default" in found[0].detail


def test_making_an_optional_property_with_a_default_required_is_refused() -> None:
    old = with_prop("unit", {"type": "string", "default": "kWh"})
    new = {**old, "required": [*BASE["required"], "unit"]}
    assert changes(old, new) == [("/properties/unit", "required-added")]


def test_making_an_optional_property_required_is_refused() -> None:
    new = {**BASE, "required": [*BASE["required"], "status"]}
    assert changes(BASE, new) == [("/properties/status", "required-added")]


def test_removed_property_is_refused() -> None:
    props = {k: v for k, v in BASE["properties"].items() if k != "tags"}
    found = backward_incompatibilities(BASE, {**BASE, "properties": props})
    assert [(c.path, c.change) for c in found] == [("/properties/tags", "property-removed")]
    assert "'tags'" in found[0].detail


@pytest.mark.parametrize(
    ("old", "new", "change"),
    [
        ({"type": "number"}, {"type": "integer"}, "type-narrowed"),
        ({"type": ["string", "null"]}, {"type": "string"}, "type-narrowed"),
        ({}, {"type": "string"}, "type-narrowed"),
        ({"type": "string"}, {"type": "integer"}, "type-changed"),
        ({"type": "integer"}, {"type": "string"}, "type-changed"),
        (
            {"type": "string", "enum": ["a", "b"]},
            {"type": "string", "enum": ["a"]},
            "enum-tightened",
        ),
        ({"type": "string"}, {"type": "string", "enum": ["a"]}, "enum-added"),
        ({"type": "string"}, {"type": "string", "const": "a"}, "const-changed"),
        ({"type": "string"}, {"type": "string", "maxLength": 10}, "max-length-added"),
        (
            {"type": "string", "maxLength": 10},
            {"type": "string", "maxLength": 5},
            "max-length-lowered",
        ),
        (
            {"type": "string", "minLength": 1},
            {"type": "string", "minLength": 2},
            "min-length-raised",
        ),
        ({"type": "string"}, {"type": "string", "minLength": 2}, "min-length-added"),
        ({"type": "number", "maximum": 10}, {"type": "number", "maximum": 9.5}, "maximum-lowered"),
        ({"type": "number"}, {"type": "number", "maximum": 10}, "maximum-added"),
        ({"type": "number", "minimum": 0}, {"type": "number", "minimum": 1}, "minimum-raised"),
        ({"type": "number"}, {"type": "number", "exclusiveMinimum": 0}, "exclusive-minimum-added"),
        ({"type": "array"}, {"type": "array", "maxItems": 3}, "max-items-added"),
        ({"type": "array", "minItems": 1}, {"type": "array", "minItems": 2}, "min-items-raised"),
        ({"type": "array"}, {"type": "array", "uniqueItems": True}, "unique-items-added"),
        (
            {"type": "number", "multipleOf": 1},
            {"type": "number", "multipleOf": 2},
            "multiple-of-changed",
        ),
        ({"type": "string"}, {"type": "string", "pattern": "^a"}, "pattern-changed"),
        (
            {"type": "string", "pattern": "^a"},
            {"type": "string", "pattern": "^b"},
            "pattern-changed",
        ),
        ({"type": "string"}, {"type": "string", "format": "date-time"}, "format-changed"),
        ({}, {"anyOf": [{"type": "string"}]}, "unverifiable-change"),
        ({"type": "string"}, False, "schema-closed"),
    ],
)
def test_narrowing_a_property_is_refused(old: Any, new: Any, change: str) -> None:
    found = changes(obj({"p": old}), obj({"p": new}))
    assert change in [c for _, c in found], found
    assert all(path.startswith("/properties/p") for path, _ in found)


def test_closing_additional_properties_is_refused() -> None:
    assert changes(BASE, {**BASE, "additionalProperties": False}) == [
        ("/additionalProperties", "additional-properties-closed")
    ]


def test_constraining_additional_properties_is_refused() -> None:
    assert changes(BASE, {**BASE, "additionalProperties": {"type": "string"}}) == [
        ("/additionalProperties", "type-narrowed")
    ]


def test_nested_changes_name_their_path() -> None:
    new = with_prop("address", obj({"zip": {"type": "string", "pattern": "^[0-9]{4}$"}}))
    assert changes(BASE, new) == [("/properties/address/properties/zip", "pattern-changed")]


def test_array_items_are_compared() -> None:
    new = with_prop("tags", {"type": "array", "items": {"type": "string", "maxLength": 3}})
    assert changes(BASE, new) == [("/properties/tags/items", "max-length-added")]


def test_every_offending_change_is_reported() -> None:
    props = dict(BASE["properties"])
    del props["address"]
    props["kwh"] = {"type": "integer", "minimum": 0, "maximum": 1000}
    props["status"] = {"type": "string", "enum": ["ok", "estimated"]}
    found = changes(BASE, {**BASE, "properties": props, "additionalProperties": False})
    assert sorted(found) == sorted(
        [
            ("/properties/address", "property-removed"),
            ("/properties/kwh", "type-narrowed"),
            ("/properties/status", "enum-tightened"),
            ("/additionalProperties", "additional-properties-closed"),
        ]
    )


def test_key_field_type_change_is_refused_even_when_widening() -> None:
    old = obj({"id": {"type": "integer"}})
    new = obj({"id": {"type": "number"}})
    assert changes(old, new) == []
    assert changes(old, new, key_field="id") == [("/properties/id", "key-field-type-changed")]


def test_subject_field_type_change_is_refused() -> None:
    old = obj({"household": {"type": "string"}}, required=["household"])
    new = obj({"household": {"type": ["string", "integer"]}}, required=["household"])
    assert changes(old, new, subject_field="household") == [
        ("/properties/household", "subject-field-type-changed")
    ]


def test_details_say_what_changed() -> None:
    old = obj({"p": {"type": "string", "enum": ["a", "b", "c"]}})
    new = obj({"p": {"type": "string", "enum": ["a"]}})
    [change] = backward_incompatibilities(old, new)
    assert '"b"' in change.detail
    assert '"c"' in change.detail
    assert change.as_dict() == {
        "path": "/properties/p",
        "change": "enum-tightened",
        "detail": change.detail,
    }


def test_pointer_escapes_names() -> None:
    assert pointer("properties", "a/b~c") == "/properties/a~1b~0c"
