"""Record validation: a dataset's JSON Schema compiled once per version.

``jsonschema-rs`` compiles a schema into a validator written in Rust that
implements JSON Schema 2020-12 whole (``prefixItems``, ``unevaluated*``,
``$dynamicRef``…). Measured on the benchmark's 13-field record: about 2 µs
per valid record, where fastjsonschema's generated Python took 18 µs and the
pure-Python ``jsonschema`` about 240 µs. ``format`` is asserted (a
``date-time`` that is not one is an error), as producers expect.

A valid record costs one ``is_valid`` call; only an invalid one is walked
again to collect its errors: every error, up to :data:`MAX_ERRORS_PER_RECORD`,
each as a JSON Pointer into the record and a message.

A schema never reaches the network: a ``$ref`` to a remote document makes the
schema unusable instead of a fetch on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import jsonschema_rs

# Enough to fix a record in one go, bounded so one absurd record cannot make
# its dead letter (or the HTTP answer) huge.
MAX_ERRORS_PER_RECORD = 20


@dataclass(frozen=True, slots=True)
class FieldError:
    path: str  # JSON Pointer into the record, "" for the record itself
    message: str


# None when the record is valid, else why it is not (at least one error).
Validator = Callable[[Any], list[FieldError] | None]


class SchemaUnusable(ValueError):
    """The schema cannot be compiled into a validator."""


def pointer(parts: Sequence[str | int]) -> str:
    """RFC 6901: ``["a/b", 0]`` is ``/a~1b/0``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def compile_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for ``schema``; raises :class:`SchemaUnusable`."""
    if not isinstance(schema, Mapping):
        raise SchemaUnusable("a JSON Schema must be an object")
    try:
        compiled = jsonschema_rs.validator_for(dict(schema), validate_formats=True, offline=True)
    except (jsonschema_rs.ValidationError, ValueError, TypeError) as exc:
        raise SchemaUnusable(f"the schema cannot be compiled: {exc}") from exc
    is_valid = compiled.is_valid
    iter_errors = compiled.iter_errors

    def validate(record: Any) -> list[FieldError] | None:
        if is_valid(record):
            return None
        return [
            FieldError(pointer(error.instance_path), error.message)
            for error in islice(iter_errors(record), MAX_ERRORS_PER_RECORD)
        ]

    return validate
