"""Record validation: a dataset's JSON Schema compiled once per version.

fastjsonschema turns a schema into Python code (about 5-15 µs per record,
where interpreting it with ``jsonschema`` costs about 240 µs). It implements
drafts 4 to 7; the 2020-12 keywords it does not know (``prefixItems``,
``unevaluated*``, ``dependent*``, ``$dynamicRef``) would be silently ignored,
so a schema that uses them is validated by ``jsonschema``'s 2020-12 validator
instead: slower, never wrong.

A validator reports the first error of a record (fastjsonschema stops there),
as a JSON Pointer and a message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import jsonschema

# Keywords of JSON Schema 2020-12 that fastjsonschema does not implement.
_BEYOND_DRAFT7 = frozenset(
    {
        "prefixItems",
        "unevaluatedProperties",
        "unevaluatedItems",
        "dependentRequired",
        "dependentSchemas",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "minContains",
        "maxContains",
    }
)


@dataclass(frozen=True, slots=True)
class FieldError:
    path: str  # JSON Pointer into the record, "" for the record itself
    message: str


# None when the record is valid, else why it is not.
Validator = Callable[[Any], FieldError | None]


class SchemaUnusable(ValueError):
    """The schema cannot be compiled into a validator."""


def _keywords(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield str(key)
            yield from _keywords(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keywords(item)


def _pointer(parts: list[Any]) -> str:
    # fastjsonschema's path starts with its own name for the root, "data".
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts[1:] if p != "")


def compile_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for ``schema``; raises :class:`SchemaUnusable`."""
    if not isinstance(schema, Mapping):
        raise SchemaUnusable("a JSON Schema must be an object")
    if _BEYOND_DRAFT7.intersection(_keywords(schema)):
        return _compile_full(schema)
    try:
        # No defaults filled in: a record travels as its producer sent it.
        compiled = fastjsonschema.compile(dict(schema), use_default=False)
    except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError) as exc:
        raise SchemaUnusable(f"the schema cannot be compiled: {exc}") from exc

    def validate(record: Any) -> FieldError | None:
        try:
            compiled(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            message = exc.message
            if exc.name and message.startswith(exc.name):
                message = message[len(exc.name) :].strip()
            return FieldError(_pointer(list(exc.path or [])), message)
        return None

    return validate


def _compile_full(schema: Mapping[str, Any]) -> Validator:
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(dict(schema))
        checker = cls(schema, format_checker=cls.FORMAT_CHECKER)
    except jsonschema.SchemaError as exc:
        raise SchemaUnusable(f"the schema is not valid JSON Schema: {exc.message}") from exc

    def validate(record: Any) -> FieldError | None:
        error = jsonschema.exceptions.best_match(checker.iter_errors(record))
        if error is None:
            return None
        return FieldError(_pointer(["data", *error.absolute_path]), error.message)

    return validate
