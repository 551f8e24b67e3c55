"""A hostile-input corpus, built from a service's OpenAPI document: for each
operation, the requests a stranger's tools send to find a server error.

Every JSON value below is raw text, because the standard serializers refuse
to write most of it: deep nesting, numbers beyond a double or beyond Python's
integer-text limit, NaN and Infinity literals, lone surrogates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

HOLE = "__hostile_value__"

# JSON texts put in place of each value of a plausible body.
HOSTILE_VALUES: dict[str, bytes] = {
    "float-overflow": b"1e400",
    "negative-float-overflow": b"-1e400",
    "integer-5000-digits": b"1" + b"0" * 5000,
    "integer-over-64-bits": b"18446744073709551616",
    "nan": b"NaN",
    "infinity": b"Infinity",
    "negative-infinity": b"-Infinity",
    "lone-high-surrogate": b'"\\ud800"',
    "lone-low-surrogate": b'"a\\udfffb"',
    "nul-in-string": b'"a\\u0000b"',
    "deep-array-300": b"[" * 300 + b"]" * 300,
    "deep-object-300": b'{"a":' * 300 + b"1" + b"}" * 300,
    "deep-array-5000": b"[" * 5000 + b"]" * 5000,
    "long-string": b'"' + b"x" * 100_000 + b'"',
}

# Whole bodies, whatever the operation expects.
HOSTILE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "null": b"null",
    "empty-array": b"[]",
    "empty-object": b"{}",
    "zero": b"0",
    "string": b'"x"',
    "deep-array-300": HOSTILE_VALUES["deep-array-300"],
    "deep-object-300": HOSTILE_VALUES["deep-object-300"],
    "deep-array-5000": HOSTILE_VALUES["deep-array-5000"],
    "deep-object-5000": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "invalid-utf8": b'{"name": "\xff\xfe\xfd"}',
    "invalid-utf8-bare": b"\xff\xfe\x00\x80",
    "utf16": '{"name": "x"}'.encode("utf-16"),
    "nan-literal": b"NaN",
    "truncated": b'{"name": ',
    "trailing-garbage": b'{"name": "x"} garbage',
}

HOSTILE_CONTENT_TYPES = [
    "text/plain",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "application/json;;;==",
    "application/x-ndjson",
    "*/*",
]

# Path and query parameter values, already URL-encoded.
HOSTILE_PARAMETERS: dict[str, str] = {
    "invalid-utf8": "%FF%FE",
    "encoded-surrogate": "%ED%A0%80",
    "nul": "%00",
    "float-overflow": "1e400",
    "integer-5000-digits": "9" * 5000,
    "nan": "NaN",
    "negative": "-1",
    "empty": "",
    "dot-dot": "..%2F..%2Fetc",
    "long": "a" * 4000,
    "unicode": quote("é☃𝄞"),
}


@dataclass
class Attempt:
    """One request of the corpus."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str | bytes] = field(default_factory=dict)


@dataclass
class Operation:
    method: str
    path: str  # the template, with {params}
    path_params: list[str]
    query_params: list[str]
    body_schema: dict[str, Any] | None


def operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            params = op.get("parameters", [])
            body = op.get("requestBody", {}).get("content", {})
            schema = (body.get("application/json") or {}).get("schema")
            found.append(
                Operation(
                    method,
                    path,
                    [p["name"] for p in params if p["in"] == "path"],
                    [p["name"] for p in params if p["in"] == "query"],
                    _resolve(document, schema) if schema is not None else None,
                )
            )
    return found


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"].removeprefix("#/").split("/")
        target: Any = document
        for part in ref:
            target = target[part]
        schema = target
    return schema


def skeleton(document: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:  # noqa: PLR0911 - a return per JSON type
    """A plausible value of ``schema``: every property present."""
    schema = _resolve(document, schema)
    if depth > 6:
        return "x"
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(document, s).get("type") != "null"]
            if options:
                return skeleton(document, options[0], depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {"field": {"type": "string"}}
        return {k: skeleton(document, v, depth + 1) for k, v in properties.items()}
    if kind == "array":
        return [skeleton(document, schema.get("items") or {}, depth + 1)]
    if kind == "integer":
        return schema.get("minimum", 1)
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if schema.get("format") == "email":
        return "hostile@example.org"
    return "hostile-value"


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _with_hole(value: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return HOLE
    head, *rest = path
    if isinstance(value, dict):
        return {k: (_with_hole(v, tuple(rest)) if k == head else v) for k, v in value.items()}
    return [(_with_hole(v, tuple(rest)) if i == head else v) for i, v in enumerate(value)]


def bodies(example: Any) -> Iterator[tuple[str, bytes]]:
    """``example`` with each of its values replaced by each hostile value,
    then with a key given twice."""
    for leaf in _leaves(example):
        text = orjson.dumps(_with_hole(example, leaf))
        for name, hostile in HOSTILE_VALUES.items():
            yield (
                f"{'/'.join(map(str, leaf))}={name}",
                text.replace(orjson.dumps(HOLE), hostile),
            )
    if isinstance(example, dict) and example:
        first = next(iter(example))
        text = orjson.dumps(example)
        duplicated = b"{" + orjson.dumps(first) + b': {"dup": [1]},' + text[1:]
        yield "duplicate-key", duplicated


def attempts(
    op: Operation,
    *,
    path_values: dict[str, str],
    example: Any,
    max_body_bytes: int,
    max_header_bytes: int,
) -> Iterator[Attempt]:
    method = op.method.upper()
    plain = op.path
    for name in op.path_params:
        plain = plain.replace("{" + name + "}", path_values.get(name, "hostile"))
    json_type = {"content-type": "application/json"}
    yield Attempt("plain", method, plain, orjson.dumps(example) if example is not None else None)
    if example is not None:
        for name, body in bodies(example):
            yield Attempt(f"value {name}", method, plain, body, json_type)
        for content_type in HOSTILE_CONTENT_TYPES:
            yield Attempt(
                f"content-type {content_type}",
                method,
                plain,
                orjson.dumps(example),
                {"content-type": content_type},
            )
        yield Attempt("no content-type", method, plain, orjson.dumps(example), {})
    for name, body in HOSTILE_BODIES.items():
        yield Attempt(f"body {name}", method, plain, body, json_type)
        if op.path.endswith("/records"):
            yield Attempt(
                f"ndjson body {name}", method, plain, body, {"content-type": "application/x-ndjson"}
            )
    yield Attempt("oversized body", method, plain, b" " * (max_body_bytes + 1), json_type)
    yield Attempt(
        "oversized headers", method, plain, None, {"x-padding": "a" * (max_header_bytes + 1)}
    )
    yield Attempt("latin-1 header", method, plain, None, {"x-request-id": b"\xe9\x7f\xff"})
    for param in op.path_params:
        for name, value in HOSTILE_PARAMETERS.items():
            path = op.path.replace("{" + param + "}", value)
            for other in op.path_params:
                path = path.replace("{" + other + "}", path_values.get(other, "hostile"))
            yield Attempt(f"path {param}={name}", method, path)
    for param in op.query_params:
        for name, value in HOSTILE_PARAMETERS.items():
            yield Attempt(f"query {param}={name}", method, f"{plain}?{param}={value}")
    yield Attempt(
        "query all",
        method,
        plain + "?" + "&".join(f"{p}=NaN" for p in op.query_params) + "&unknown=%FF",
    )
