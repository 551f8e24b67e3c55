"""HTTP routes of ingest: parse the request, call the ingestor, map the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

from datapolis_ingest.ingestion import BodyFormat, Ingestor
from datapolis_shared.errors import InvalidInput, Unavailable
from datapolis_shared.http.app import Caller

router = APIRouter(tags=["ingest"])

SCHEMA_VERSION_HEADER = "Datapolis-Schema-Version"

_FORMATS: dict[str, BodyFormat] = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
}

_RECORDS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "object", "description": "a record of the dataset's current schema"},
}
_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A JSON array of records, or NDJSON (one record per line).",
        "content": {
            "application/json": {"schema": _RECORDS_SCHEMA},
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
            "schema": {"type": "integer", "minimum": 1},
            "description": "The schema version the records follow, as catalog answered it "
            "(`version`, or `schema_version` of a new dataset). They are validated under it or "
            "a later version, never an older one: while ingest does not know it yet the answer "
            "is 503 `schema-version-not-known-yet` with Retry-After.",
        },
    ],
}
_ANSWER = {
    "description": "Every record accounted for: accepted (acknowledged by Kafka with "
    "acks=all), rejected (in the dead letters, with reasons) or a duplicate.",
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
    text = value.strip()
    # ASCII digits only, and few: int() of thousands of digits raises.
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) < 1:
        raise InvalidInput(
            f"{SCHEMA_VERSION_HEADER} must be a schema version number (1, 2, ...), "
            f"not {value[:40]!r}",
            code="invalid-schema-version",
        )
    return int(text)


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
    responses={200: _ANSWER},
)
async def push_records(slug: str, request: Request, caller: Caller) -> Response:
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
