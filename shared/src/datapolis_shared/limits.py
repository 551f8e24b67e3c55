"""Limits on the shape of JSON a service accepts, stated once.

JSON parsers accept deeper documents than the rest of the pipeline handles:
orjson parses 1,024 levels but serializes only about 254, Python's recursion
limit stops ``jsonschema`` at about 100 levels of properties. A document
deeper than the limit is refused where it is parsed, with its own problem
code, before anything recursive runs over it.

Depth counts containers: ``{}`` and ``[1, 2]`` are 1 deep, ``{"a": {"b": 1}}``
is 2 deep, a scalar is 0 deep.
"""

from __future__ import annotations

from typing import Any

# A record (HTTP JSON, NDJSON line, raw-topic value) nests at most this deep.
MAX_RECORD_DEPTH = 64
# A dataset's JSON Schema nests at most this deep: 64 containers, about 30
# levels of nested "properties".
MAX_SCHEMA_DEPTH = 64

RECORD_TOO_DEEP = "record-too-deep"
SCHEMA_TOO_DEEP = "schema-too-deep"


def exceeds_depth(value: Any, max_depth: int) -> bool:
    """Whether ``value`` (decoded JSON) nests deeper than ``max_depth``.

    It descends into containers only, and at most ``max_depth + 1`` frames, so
    it is cheap on flat records and safe on any input."""
    kind = type(value)
    if kind is dict:
        children: Any = value.values()
    elif kind is list:
        children = value
    else:
        return False
    if max_depth <= 0:
        return True
    below = max_depth - 1
    for child in children:
        child_kind = type(child)
        if (child_kind is dict or child_kind is list) and exceeds_depth(child, below):
            return True
    return False


def clipped(value: Any, max_depth: int) -> Any:
    """A copy of ``value`` with the containers deeper than ``max_depth``
    replaced by ``"…"``: something that can always be serialized and shown."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    if max_depth <= 0:
        return "…"
    if kind is dict:
        return {str(k): clipped(v, max_depth - 1) for k, v in value.items()}
    return [clipped(v, max_depth - 1) for v in value]
