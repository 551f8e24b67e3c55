"""The fields a dataset's JSON Schema describes, which an agreement may ask for.

A record is a JSON object (catalog refuses any other schema), so its fields
are the names under the root's ``properties``. An object-valued property that
declares ``properties`` of its own also has nested fields, named by their path
with dots (``address.city``). Subschemas that ``allOf``, ``anyOf`` and
``oneOf`` combine at the same level add their properties too, and a local
``$ref`` (``#/$defs/...``) is followed. Arrays are not entered: an array is one
field, whatever its items hold.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Deeper nesting than this yields no more paths. Catalog already refuses
# schemas nested past its own limit; this keeps the walk bounded regardless.
MAX_PATH_DEPTH = 16
COMBINATORS = ("allOf", "anyOf", "oneOf")


@dataclass(frozen=True, slots=True)
class SchemaFields:
    """``fields``: the top-level names, in the schema's order. ``paths``: the
    top-level names then every nested path, each once."""

    fields: tuple[str, ...]
    paths: tuple[str, ...]


def schema_fields(schema: Mapping[str, Any]) -> SchemaFields:
    fields = _unique(tuple(name for name, _ in _properties(schema, schema, frozenset())))
    nested: list[str] = []
    for name, subschema in _properties(schema, schema, frozenset()):
        nested.extend(_nested_paths(schema, subschema, (name,), frozenset()))
    return SchemaFields(fields=fields, paths=_unique((*fields, *nested)))


def _nested_paths(
    root: Mapping[str, Any], schema: object, prefix: tuple[str, ...], seen: frozenset[str]
) -> Iterator[str]:
    if len(prefix) >= MAX_PATH_DEPTH or not isinstance(schema, Mapping):
        return
    schema, seen = _resolve(root, schema, seen)
    for name, subschema in _properties(root, schema, seen):
        path = (*prefix, name)
        # A name with a dot would make its dotted path ambiguous
        # ("a.b" of the root or "b" of "a"): it stays a field of its
        # parent, which may still be asked for whole.
        if any("." in part for part in path):
            continue
        yield ".".join(path)
        yield from _nested_paths(root, subschema, path, seen)


def _properties(
    root: Mapping[str, Any], schema: Mapping[str, Any], seen: frozenset[str]
) -> Iterator[tuple[str, object]]:
    """The (name, subschema) pairs a schema declares at its own level,
    combinators and local references included."""
    schema, seen = _resolve(root, schema, seen)
    declared = schema.get("properties")
    if isinstance(declared, Mapping):
        for name, subschema in declared.items():
            if isinstance(name, str):
                yield name, subschema
    for keyword in COMBINATORS:
        branches = schema.get(keyword)
        if isinstance(branches, list):
            for branch in branches:
                if isinstance(branch, Mapping):
                    yield from _properties(root, branch, seen)


def _resolve(
    root: Mapping[str, Any], schema: Mapping[str, Any], seen: frozenset[str]
) -> tuple[Mapping[str, Any], frozenset[str]]:
    """``schema`` with a local ``$ref`` merged in (its own keywords win), and
    the references followed so far: a reference met again is not followed,
    so a recursive schema ends."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#") or ref in seen:
        return schema, seen
    target: object = root
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, Mapping) or part not in target:
            return schema, seen
        target = target[part]
    if not isinstance(target, Mapping):
        return schema, seen
    merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return _resolve(root, merged, seen | {ref})


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))
