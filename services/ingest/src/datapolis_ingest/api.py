"""HTTP routes of ingest: parse the request, call the ingestor, map the answer."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from datapolis_ingest.ingestion import BodyFormat, Ingestor
from datapolis_shared.errors import InvalidInput, Unavailable
from datapolis_shared.http.app import Caller
from datapolis_shared.http.openapi import (
    MISSING_SCOPE,
    OVERLOADED,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    ProblemCode,
    problem_responses,
)
from datapolis_shared.http.strict_json import StrictJsonRoute

router = APIRouter(tags=["ingest"], route_class=StrictJsonRoute)

SCHEMA_VERSION_HEADER = "Datapolis-Schema-Version"
# A version number, without sign, spaces or leading zeros; at most 9 digits,
# so int() never meets thousands of them.
SCHEMA_VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,8}$")

_FORMATS: dict[str, BodyFormat] = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
}

Slug = Annotated[str, Path(description="the dataset's slug", examples=["energy-meters"])]

# Problem codes this API answers besides the shared ones.
NOT_DATASET_PUBLISHER = ProblemCode(
    "not-dataset-publisher", 403, "only the dataset's publisher may push its records"
)
DATASET_NOT_FOUND = ProblemCode("dataset-not-found", 404, "ingest knows no dataset by this slug")
DATASET_RETIRED = ProblemCode("dataset-retired", 409, "the dataset is retired")
DATASET_NOT_KNOWN_YET = ProblemCode(
    "dataset-not-known-yet",
    503,
    "ingest has not heard of this dataset yet (a dataset registered moments ago reaches "
    "ingest within the propagation bound, 5 s); retry after `Retry-After` seconds",
    retry_after=True,
)
SCHEMA_VERSION_NOT_KNOWN_YET = ProblemCode(
    "schema-version-not-known-yet",
    503,
    "ingest does not have the dataset's first schema version, or the version named in "
    "`Datapolis-Schema-Version`, yet; retry after `Retry-After` seconds",
    retry_after=True,
)
SCHEMA_VERSION_NOT_FOUND = ProblemCode(
    "schema-version-not-found",
    409,
    "the dataset has no such schema version (after the propagation bound); "
    "`current_version` is its newest",
    (("current_version", 2),),
)
INVALID_SCHEMA_VERSION = ProblemCode(
    "invalid-schema-version", 422, "`Datapolis-Schema-Version` is not a positive integer"
)
SCHEMA_UNUSABLE = ProblemCode("schema-unusable", 409, "ingest cannot compile the dataset's schema")
IDEMPOTENCY_KEY_IN_PROGRESS = ProblemCode(
    "idempotency-key-in-progress", 409, "a request with this Idempotency-Key is still running"
)
TOO_MANY_RECORDS = ProblemCode(
    "too-many-records",
    413,
    "the batch holds more records than `INGEST_MAX_BATCH_RECORDS` (5000 by default)",
    (("max_records", 5000),),
)
MALFORMED_JSON = ProblemCode(
    "malformed-json",
    422,
    "the JSON body does not parse; `line`, `column` and `position` say where",
    (("line", 1), ("column", 14), ("position", 13)),
)
BODY_TOO_DEEP = ProblemCode(
    "body-too-deep", 422, "the body nests deeper than a JSON parser can read (1,024 levels)"
)
RECORD_TOO_LARGE = ProblemCode(
    "record-too-large",
    413,
    "Kafka refused a record as larger than the topic allows (records over the limit "
    "are otherwise rejected one by one in `rejected`)",
)
NOT_A_BATCH = ProblemCode("not-a-batch", 422, "the JSON body is neither an array nor an object")
EMPTY_BATCH = ProblemCode("empty-batch", 422, "the batch holds no records")
INVALID_IDEMPOTENCY_KEY = ProblemCode(
    "invalid-idempotency-key", 422, "the Idempotency-Key is empty, too long or not printable"
)
IDEMPOTENCY_KEY_REUSED = ProblemCode(
    "idempotency-key-reused", 422, "this Idempotency-Key came with another body"
)

# Whatever a JSON body holds is parsed; each item that is not an object of the
# dataset's schema is rejected on its own (listed in `rejected`, sent to the
# dead letters) while the others go on, so the document must not promise
# objects only: a client would believe a mixed batch is refused whole.
_RECORD_SCHEMA: dict[str, Any] = {
    "description": "a record: a JSON object of the dataset's current schema. Any other "
    "value is accepted in the batch and rejected on its own, listed in `rejected`.",
}
_BODY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": _RECORD_SCHEMA, "minItems": 1},
        {"type": "object", "description": "a single record: a batch of one"},
    ],
}
_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A JSON array of records (or a single record), or NDJSON (one record "
        "per line; a line that is not JSON is rejected on its own).",
        "content": {
            "application/json": {
                "schema": _BODY_SCHEMA,
                "example": [
                    {"meter_id": "m-17", "kwh": 1.25, "measured_at": "2026-03-01T10:00:00Z"}
                ],
            },
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    },
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 255},
            "description": "A retry with the same key and body replays the first answer.",
        },
        {
            "name": SCHEMA_VERSION_HEADER,
            "in": "header",
            "required": False,
            # A header value is text: the digits of a version number.
            "schema": {"type": "string", "pattern": SCHEMA_VERSION_PATTERN.pattern},
            "description": "The schema version the records follow, as catalog answered it "
            "(`version`, or `schema_version` of a new dataset). They are validated under it or "
            "a later version, never an older one: while ingest does not know it yet the answer "
            "is 503 `schema-version-not-known-yet` with Retry-After.",
        },
    ],
}


class RejectionError(BaseModel):
    path: str = Field(description="JSON Pointer into the record")
    message: str


class Rejection(BaseModel):
    index: int = Field(description="the record's position in the batch, from 0")
    errors: list[RejectionError]
    line: int | None = Field(default=None, description="NDJSON: the record's line")


class IngestAnswer(BaseModel):
    dataset: str
    schema_version: int
    accepted: int
    duplicates: int
    rejected: list[Rejection]


_ANSWER: dict[str, Any] = {
    "model": IngestAnswer,
    "description": "Every record accounted for: accepted (acknowledged by Kafka with "
    "acks=all), rejected (in the dead letters, with reasons) or a duplicate.",
    "headers": {
        "Idempotent-Replayed": {
            "description": "`true` when this answer replays an earlier request's",
            "schema": {"type": "string", "enum": ["true"]},
        }
    },
    "content": {
        "application/json": {
            "example": {
                "dataset": "energy-meters",
                "schema_version": 1,
                "accepted": 99,
                "duplicates": 0,
                "rejected": [
                    {"index": 7, "errors": [{"path": "/kwh", "message": "must be number"}]}
                ],
            }
        }
    },
}


def schema_version(value: str | None) -> int | None:
    if value is None:
        return None
    if not SCHEMA_VERSION_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"{SCHEMA_VERSION_HEADER} must be a schema version number (1, 2, ...), "
            f"not {value[:40]!r}",
            code="invalid-schema-version",
        )
    return int(value)


def body_format(content_type: str | None) -> BodyFormat:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    found = _FORMATS.get(media)
    if found is None:
        raise HTTPException(
            415,
            f"send application/json (an array of records) or application/x-ndjson, "
            f"not {media or 'no content type'!r}",
        )
    return found


def get_ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor | None = getattr(request.app.state, "ingestor", None)
    if ingestor is None:
        raise Unavailable("ingest is still connecting to Kafka and PostgreSQL", retry_after_s=2)
    return ingestor


@router.post(
    "/datasets/{slug}/records",
    summary="Push a batch of records to a dataset",
    openapi_extra=_OPENAPI,
    response_model=IngestAnswer,
    responses={
        200: _ANSWER,
        **problem_responses(
            MISSING_SCOPE,
            NOT_DATASET_PUBLISHER,
            DATASET_NOT_FOUND,
            DATASET_RETIRED,
            DATASET_NOT_KNOWN_YET,
            SCHEMA_VERSION_NOT_KNOWN_YET,
            SCHEMA_VERSION_NOT_FOUND,
            INVALID_SCHEMA_VERSION,
            SCHEMA_UNUSABLE,
            IDEMPOTENCY_KEY_IN_PROGRESS,
            PAYLOAD_TOO_LARGE,
            TOO_MANY_RECORDS,
            UNSUPPORTED_MEDIA_TYPE,
            MALFORMED_JSON,
            BODY_TOO_DEEP,
            RECORD_TOO_LARGE,
            NOT_A_BATCH,
            EMPTY_BATCH,
            INVALID_IDEMPOTENCY_KEY,
            IDEMPOTENCY_KEY_REUSED,
            OVERLOADED,
        ),
    },
)
async def push_records(slug: Slug, request: Request, caller: Caller) -> Response:
    fmt = body_format(request.headers.get("content-type"))
    version = schema_version(request.headers.get(SCHEMA_VERSION_HEADER))
    ingestor = get_ingestor(request)
    answer = await ingestor.ingest(
        caller=caller,
        slug=slug,
        body=await request.body(),
        body_format=fmt,
        idempotency_key=request.headers.get("idempotency-key"),
        schema_version=version,
    )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, media_type="application/json", headers=headers)
