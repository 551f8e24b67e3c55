"""What a dataset's JSON Schema must be before the catalog accepts it."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from datapolis_shared.errors import InvalidInput
from datapolis_shared.limits import MAX_SCHEMA_DEPTH, SCHEMA_TOO_DEEP, exceeds_depth

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def check_dataset_schema(
    schema: dict[str, Any],
    *,
    key_field: str | None,
    subject_field: str | None,
) -> None:
    """Raise :class:`InvalidInput` unless ``schema`` is a valid JSON Schema
    2020-12 describing objects that carry the dataset's key and subject fields."""
    # Before anything recursive runs over it (the metaschema check, the
    # compatibility rules, the validators): past the limit they exhaust the
    # interpreter's stack.
    if exceeds_depth(schema, MAX_SCHEMA_DEPTH):
        raise InvalidInput(
            f"a schema nests at most {MAX_SCHEMA_DEPTH} objects or arrays deep",
            code=SCHEMA_TOO_DEEP,
            max_depth=MAX_SCHEMA_DEPTH,
        )
    declared = schema.get("$schema")
    if declared is not None and (
        not isinstance(declared, str) or declared.rstrip("#") != DRAFT_2020_12
    ):
        raise InvalidInput(
            f"the schema declares $schema {declared!r}; datapolis speaks JSON Schema 2020-12 "
            f"({DRAFT_2020_12})",
            code="invalid-json-schema",
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidInput(
            f"not a valid JSON Schema 2020-12: {exc.message}",
            code="invalid-json-schema",
            schema_path="/" + "/".join(str(p) for p in exc.path),
        ) from exc
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise InvalidInput(
            'a record is a JSON object: the schema needs "type": "object" and "properties"',
            code="schema-not-an-object",
        )
    properties: dict[str, Any] = schema["properties"]
    required = set(schema.get("required") or ())
    if key_field is not None and key_field not in properties:
        raise InvalidInput(
            f"the key field '{key_field}' is not a property of the schema",
            code="key-field-not-in-schema",
        )
    if subject_field is not None:
        if subject_field not in properties:
            raise InvalidInput(
                f"the subject field '{subject_field}' is not a property of the schema",
                code="subject-field-not-in-schema",
            )
        # Consent is checked per record on this field: a record without it
        # could not be matched to anyone's consent.
        if subject_field not in required:
            raise InvalidInput(
                f"the subject field '{subject_field}' must be required by the schema",
                code="subject-field-not-required",
            )
