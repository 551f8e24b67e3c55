"""Is a new JSON Schema version backward compatible with the previous one?

The rule a dataset's consumers rely on: **every record valid under the previous
version is still valid under the new one, and every field the previous version
described is still there.** So the topic's history, producers still sending the
previous shape, and consumers written against the previous version keep working.
A schema may therefore only *widen*: add optional properties, add enum values,
relax bounds, accept more types (``integer`` -> ``number``, ``string`` ->
``["string", "null"]``). It may not require a property that was optional or
absent, remove a property, narrow or change a type, tighten an enum, a bound, a
pattern or a format, or close ``additionalProperties``. The key and subject
fields may not change type at all (widening them would break partitioning and
consent matching).

A newly required property is refused even when it declares a ``default``. In
JSON Schema ``default`` is an annotation: no validator fills it in (unlike an
Avro reader), and ingest validates every record against the newest version,
so a producer still sending the previous shape would see its records refused.

Keywords whose effect cannot be compared structurally (``anyOf``, ``oneOf``,
``not``, ``if``/``then``/``else``, remote ``$ref``...) are accepted when
unchanged or removed and reported as ``unverifiable-change`` otherwise: the
producer may then declare a major version.

Pure functions, no I/O: ``backward_incompatibilities`` returns the list of
offending changes, each with the JSON Pointer of the place in the schema, a
stable ``change`` code and a sentence for humans.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

JSONSchema = dict[str, Any] | bool

ANY_TYPE = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})

# Keywords whose new value must not be lower than the old one (upper bounds)...
UPPER_BOUNDS = {
    "maximum": "maximum",
    "exclusiveMaximum": "exclusive-maximum",
    "maxLength": "max-length",
    "maxItems": "max-items",
    "maxProperties": "max-properties",
    "maxContains": "max-contains",
}
# ...and those whose new value must not be higher (lower bounds).
LOWER_BOUNDS = {
    "minimum": "minimum",
    "exclusiveMinimum": "exclusive-minimum",
    "minLength": "min-length",
    "minItems": "min-items",
    "minProperties": "min-properties",
    "minContains": "min-contains",
}
# Keywords we cannot compare structurally: fine when unchanged or removed
# (removing a constraint only widens), refused when added or changed.
UNVERIFIABLE = (
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "propertyNames",
    "prefixItems",
    "contains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
)
MAX_DEPTH = 64


@dataclass(frozen=True)
class SchemaChange:
    path: str
    change: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def backward_incompatibilities(
    old: JSONSchema,
    new: JSONSchema,
    *,
    key_field: str | None = None,
    subject_field: str | None = None,
) -> list[SchemaChange]:
    """Every change from ``old`` to ``new`` that breaks the compatibility rule
    above; empty when ``new`` is a compatible next version."""
    checker = _Checker(old, new)
    checker.compare(old, new, "", 0, frozenset())
    for field_name, code, label in (
        (key_field, "key-field-type-changed", "key field"),
        (subject_field, "subject-field-type-changed", "subject field"),
    ):
        if field_name:
            checker.compare_identity_field(field_name, code, label)
    return checker.changes


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _as_object(schema: JSONSchema) -> dict[str, Any]:
    if schema is True:
        return {}
    if schema is False:
        return {"not": {}}
    return schema


def _types(schema: dict[str, Any]) -> frozenset[str]:
    declared = schema.get("type")
    if declared is None:
        return ANY_TYPE
    if isinstance(declared, str):
        return frozenset({declared})
    return frozenset(str(t) for t in declared)


def _covered(types: frozenset[str], by: frozenset[str]) -> frozenset[str]:
    """The members of ``types`` that ``by`` accepts (every integer is a number)."""
    return frozenset(t for t in types if t in by or (t == "integer" and "number" in by))


def _describe(types: frozenset[str]) -> str:
    if types == ANY_TYPE:
        return "any type"
    names = sorted(types)
    return names[0] if len(names) == 1 else "[" + ", ".join(names) + "]"


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


class _Checker:
    def __init__(self, old_root: JSONSchema, new_root: JSONSchema) -> None:
        self.old_root = _as_object(old_root)
        self.new_root = _as_object(new_root)
        self.changes: list[SchemaChange] = []

    def add(self, path: str, change: str, detail: str) -> None:
        self.changes.append(SchemaChange(path or "/", change, detail))

    # -- $ref ---------------------------------------------------------------

    @staticmethod
    def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The subschema with a local ``$ref`` replaced by its target (sibling
        keywords kept); returns the ref ('' when none) to detect cycles."""
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema, ""
        target: Any = root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                return schema, ""
            target = target[part]
        merged = {**_as_object(target), **{k: v for k, v in schema.items() if k != "$ref"}}
        return merged, ref

    # -- the comparison ------------------------------------------------------

    def compare(
        self,
        old_schema: JSONSchema,
        new_schema: JSONSchema,
        path: str,
        depth: int,
        seen: frozenset[tuple[str, str]],
    ) -> None:
        if depth > MAX_DEPTH:
            return
        if new_schema is False and old_schema is not False:
            self.add(path, "schema-closed", "the schema now accepts no value at all")
            return
        old, old_ref = self._resolve(self.old_root, _as_object(old_schema))
        new, new_ref = self._resolve(self.new_root, _as_object(new_schema))
        if old_ref or new_ref:
            if (old_ref, new_ref) in seen:
                return
            seen = seen | {(old_ref, new_ref)}
        if _canonical(old) == _canonical(new):
            return
        self._compare_type(old, new, path)
        self._compare_values(old, new, path)
        self._compare_bounds(old, new, path)
        self._compare_strings(old, new, path)
        self._compare_object(old, new, path, depth, seen)
        self._compare_array(old, new, path, depth, seen)
        self._compare_unverifiable(old, new, path)

    def _compare_type(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_types, new_types = _types(old), _types(new)
        lost = old_types - _covered(old_types, new_types)
        if not lost:
            return
        narrowed = _covered(new_types, old_types) == new_types
        self.add(
            path,
            "type-narrowed" if narrowed else "type-changed",
            f"type was {_describe(old_types)}, now {_describe(new_types)}: "
            f"values of type {_describe(lost)} valid before are refused now",
        )

    def _compare_values(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        if "enum" in new and isinstance(new["enum"], list):
            allowed = {_canonical(v) for v in new["enum"]}
            if "enum" not in old:
                if "const" not in old or _canonical(old["const"]) not in allowed:
                    self.add(path, "enum-added", "an enum now restricts values that were free")
            elif isinstance(old["enum"], list):
                removed = [v for v in old["enum"] if _canonical(v) not in allowed]
                if removed:
                    self.add(
                        path,
                        "enum-tightened",
                        "enum values removed: " + ", ".join(_canonical(v) for v in removed),
                    )
        if "const" in new:
            fixed = _canonical(new["const"])
            before = [_canonical(v) for v in old.get("enum") or ()]
            if "const" in old:
                before = [_canonical(old["const"])]
            if before != [fixed]:
                self.add(path, "const-changed", f"value now fixed to {fixed}")

    def _compare_bounds(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        for keyword, name in UPPER_BOUNDS.items():
            self._compare_bound(old, new, path, keyword, name, upper=True)
        for keyword, name in LOWER_BOUNDS.items():
            self._compare_bound(old, new, path, keyword, name, upper=False)
        if "multipleOf" in new:
            new_step, old_step = _number(new["multipleOf"]), _number(old.get("multipleOf"))
            if new_step is not None and (
                old_step is None or new_step == 0 or old_step % new_step != 0
            ):
                was = f"multiples of {old['multipleOf']}" if old_step else "free"
                self.add(
                    path,
                    "multiple-of-changed",
                    f"multipleOf {new['multipleOf']} refuses values that were {was}",
                )

    def _compare_bound(
        self,
        old: dict[str, Any],
        new: dict[str, Any],
        path: str,
        keyword: str,
        name: str,
        *,
        upper: bool,
    ) -> None:
        if keyword not in new:
            return
        new_value, old_value = _number(new[keyword]), _number(old.get(keyword))
        if new_value is None:
            return
        if old_value is None:
            self.add(path, f"{name}-added", f"{keyword} {new[keyword]} added")
        elif (upper and new_value < old_value) or (not upper and new_value > old_value):
            self.add(
                path,
                f"{name}-{'lowered' if upper else 'raised'}",
                f"{keyword} went from {old[keyword]} to {new[keyword]}",
            )

    def _compare_strings(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        for keyword, code in (("pattern", "pattern-changed"), ("format", "format-changed")):
            if keyword in new and new[keyword] != old.get(keyword):
                before = f"{old[keyword]!r}" if keyword in old else "none"
                self.add(path, code, f"{keyword} was {before}, now {new[keyword]!r}")
        if new.get("uniqueItems") is True and old.get("uniqueItems") is not True:
            self.add(path, "unique-items-added", "array items must now be unique")

    def _compare_object(
        self,
        old: dict[str, Any],
        new: dict[str, Any],
        path: str,
        depth: int,
        seen: frozenset[tuple[str, str]],
    ) -> None:
        old_props: dict[str, Any] = old.get("properties") or {}
        new_props: dict[str, Any] = new.get("properties") or {}
        for name, old_prop in old_props.items():
            prop_path = path + pointer("properties", name)
            if name not in new_props:
                self.add(
                    prop_path,
                    "property-removed",
                    f"property '{name}' was removed; consumers of the previous version read it",
                )
            else:
                self.compare(old_prop, new_props[name], prop_path, depth + 1, seen)
        old_required = set(old.get("required") or ())
        for name in new.get("required") or ():
            if name in old_required:
                continue
            prop = new_props.get(name)
            # A default does not help: JSON Schema validation never fills it in.
            with_default = isinstance(prop, dict) and "default" in prop
            self.add(
                path + pointer("properties", name),
                "required-added",
                f"property '{name}' is now required: records valid under the previous "
                "version may lack it"
                + (
                    " (its default is only an annotation: validation does not fill it in)"
                    if with_default
                    else ""
                ),
            )
        old_extra = old.get("additionalProperties", True)
        new_extra = new.get("additionalProperties", True)
        extra_path = path + pointer("additionalProperties")
        if new_extra is False and old_extra is not False:
            self.add(
                extra_path,
                "additional-properties-closed",
                "additionalProperties is now false: records with other properties are refused",
            )
        elif new_extra is not False and old_extra is not False:
            self.compare(old_extra, new_extra, extra_path, depth + 1, seen)

    def _compare_array(
        self,
        old: dict[str, Any],
        new: dict[str, Any],
        path: str,
        depth: int,
        seen: frozenset[tuple[str, str]],
    ) -> None:
        if "items" in new:
            self.compare(
                old.get("items", True), new["items"], path + pointer("items"), depth + 1, seen
            )

    def _compare_unverifiable(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        for keyword in UNVERIFIABLE:
            if keyword in new and _canonical(new[keyword]) != _canonical(old.get(keyword)):
                self.add(
                    path + pointer(keyword),
                    "unverifiable-change",
                    f"'{keyword}' was added or changed; its effect on records valid under "
                    "the previous version cannot be checked (declare a major version)",
                )
        ref = new.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#") and ref != old.get("$ref"):
            self.add(
                path + pointer("$ref"),
                "unverifiable-change",
                f"remote $ref {ref!r} cannot be checked (declare a major version)",
            )

    # -- key and subject fields ---------------------------------------------

    def compare_identity_field(self, name: str, code: str, label: str) -> None:
        old_prop = (self.old_root.get("properties") or {}).get(name)
        new_prop = (self.new_root.get("properties") or {}).get(name)
        if old_prop is None or new_prop is None:
            return  # a removal is reported as property-removed
        old_types = _types(self._resolve(self.old_root, _as_object(old_prop))[0])
        new_types = _types(self._resolve(self.new_root, _as_object(new_prop))[0])
        if old_types != new_types:
            self.add(
                pointer("properties", name),
                code,
                f"the {label} '{name}' changed type from {_describe(old_types)} "
                f"to {_describe(new_types)}: records would be keyed differently",
            )
