"""The problem codes the catalog answers, for its OpenAPI document.

Each route lists the ones it can answer (``responses=problem_responses(...)``);
the statuses come from the domain errors that carry them (see
``datapolis_shared.http.problems``).
"""

from __future__ import annotations

from datapolis_shared.http.openapi import ProblemCode

# Any operation with input: PostgreSQL refuses a value (a NUL character).
UNSTORABLE_VALUE = ProblemCode(
    "unstorable-value", 422, "a value cannot be stored (a NUL character)"
)

ORGANISATION_NOT_FOUND = ProblemCode("organisation-not-found", 404, "no organisation has this id")
ORGANISATION_EXISTS = ProblemCode("organisation-exists", 409, "an organisation has this name")
NOT_YOUR_ORGANISATION = ProblemCode(
    "not-your-organisation", 403, "a key acts for its own organisation only"
)
API_KEY_NOT_FOUND = ProblemCode("api-key-not-found", 404, "the organisation has no such key")
UNKNOWN_SCOPE = ProblemCode("unknown-scope", 422, "a scope is not one the platform knows")
SCOPE_ESCALATION = ProblemCode(
    "scope-escalation", 403, "a key cannot grant a scope it lacks itself"
)

DATASET_NOT_FOUND = ProblemCode("dataset-not-found", 404, "no dataset has this slug")
SCHEMA_NOT_FOUND = ProblemCode("schema-not-found", 404, "the dataset has no such schema version")
SLUG_TAKEN = ProblemCode("slug-taken", 409, "a dataset has this slug")
DATASET_RETIRED = ProblemCode("dataset-retired", 409, "the dataset is retired")
NOT_PUBLISHER = ProblemCode("not-publisher", 403, "only the dataset's publisher may change it")
PARTITIONS_CANNOT_DECREASE = ProblemCode(
    "partitions-cannot-decrease", 409, "Kafka topics cannot lose partitions"
)
INCOMPATIBLE_SCHEMA = ProblemCode(
    "incompatible-schema",
    409,
    "the new version would break consumers of the current one; `changes` lists why",
    (("changes", [{"path": "/properties/kwh", "detail": "type changed"}]), ("current_version", 1)),
)
PUBLISHER_REQUIRED = ProblemCode(
    "publisher-required", 422, "the operator must name the publishing organisation"
)
SUBJECT_FIELD_REQUIRED = ProblemCode(
    "subject-field-required", 422, "a personal dataset names its data-subject field"
)
SUBJECT_FIELD_NOT_PERSONAL = ProblemCode(
    "subject-field-not-personal", 422, "only a personal dataset has a data-subject field"
)
LICENCE_NOT_OPEN = ProblemCode("licence-not-open", 422, "an open dataset needs an open licence")
FIELD_REQUIRED = ProblemCode("field-required", 422, "this field cannot be removed")
INVALID_JSON_SCHEMA = ProblemCode(
    "invalid-json-schema", 422, "the schema is not a valid JSON Schema (2020-12)"
)
SCHEMA_NOT_AN_OBJECT = ProblemCode(
    "schema-not-an-object", 422, "a record schema describes a JSON object"
)
KEY_FIELD_NOT_IN_SCHEMA = ProblemCode(
    "key-field-not-in-schema", 422, "the key field is not a property of the schema"
)
SUBJECT_FIELD_NOT_IN_SCHEMA = ProblemCode(
    "subject-field-not-in-schema", 422, "the data-subject field is not a property of the schema"
)
SUBJECT_FIELD_NOT_REQUIRED = ProblemCode(
    "subject-field-not-required", 422, "the data-subject field must be required"
)
SCHEMA_TOO_DEEP = ProblemCode(
    "schema-too-deep",
    422,
    "the schema nests more objects or arrays than the limit",
    (("max_depth", 64),),
)
SCHEMA_CODES = (
    INVALID_JSON_SCHEMA,
    SCHEMA_TOO_DEEP,
    SCHEMA_NOT_AN_OBJECT,
    KEY_FIELD_NOT_IN_SCHEMA,
    SUBJECT_FIELD_NOT_IN_SCHEMA,
    SUBJECT_FIELD_NOT_REQUIRED,
)

INVALID_CURSOR = ProblemCode("invalid-cursor", 422, "the cursor is not one the catalog gave out")
INVALID_LIMIT = ProblemCode("invalid-limit", 422, "the limit is out of its bounds")
UNKNOWN_THEME = ProblemCode("unknown-theme", 422, "the theme is not one of the catalog's")
UNKNOWN_ACCESS_LEVEL = ProblemCode(
    "unknown-access-level", 422, "the access level is not open, shared or personal"
)
QUERY_TOO_LONG = ProblemCode("query-too-long", 422, "the search text exceeds 500 characters")
