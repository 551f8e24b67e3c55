"""CloudEvents 1.0 over Kafka: structured mode for control events, binary mode
for data records (Kafka protocol binding, section 3).

Structured: the value is the whole event as JSON, ``content-type`` is
``application/cloudevents+json``. Binary: the value is the record's own JSON and
the attributes travel as ``ce_*`` headers, so a plain Kafka client reads clean
JSON.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datapolis_shared.errors import InvalidInput

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
JSON_CONTENT_TYPE = "application/json"

Headers = list[tuple[str, bytes]]


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope with JSON data."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = None
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: str = JSON_CONTENT_TYPE
    dataschema: str | None = None
    data: Any = None

    def extensions(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def to_structured(event: CloudEvent) -> tuple[bytes, Headers]:
    value = event.model_dump_json(exclude_none=True).encode()
    return value, [("content-type", STRUCTURED_CONTENT_TYPE.encode())]


def from_structured(value: bytes) -> CloudEvent:
    try:
        return CloudEvent.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidInput(f"not a CloudEvents 1.0 structured event: {exc}") from exc


def binary_headers(
    *,
    id: str,
    source: str,
    type: str,
    time: datetime | None = None,
    subject: str | None = None,
    dataschema: str | None = None,
    extensions: Mapping[str, str] | None = None,
) -> Headers:
    """The ``ce_*`` headers of a binary-mode event whose value is JSON."""
    headers: Headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", type.encode()),
        ("ce_time", (time or datetime.now(UTC)).isoformat().encode()),
        ("content-type", JSON_CONTENT_TYPE.encode()),
    ]
    if subject is not None:
        headers.append(("ce_subject", subject.encode()))
    if dataschema is not None:
        headers.append(("ce_dataschema", dataschema.encode()))
    for name, value in (extensions or {}).items():
        headers.append((f"ce_{name}", value.encode()))
    return headers


def to_binary(event: CloudEvent) -> tuple[bytes, Headers]:
    headers = binary_headers(
        id=event.id,
        source=event.source,
        type=event.type,
        time=event.time,
        subject=event.subject,
        dataschema=event.dataschema,
        extensions={k: str(v) for k, v in event.extensions().items()},
    )
    return json.dumps(event.data, separators=(",", ":")).encode(), headers


def from_binary(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> CloudEvent:
    attrs: dict[str, Any] = {}
    content_type = JSON_CONTENT_TYPE
    for name, raw in headers:
        lowered = name.lower()
        if lowered.startswith("ce_"):
            attrs[lowered[3:]] = raw.decode()
        elif lowered == "content-type":
            content_type = raw.decode()
    if attrs.get("specversion") != "1.0":
        raise InvalidInput("not a CloudEvents 1.0 binary-mode record: ce_specversion missing")
    try:
        data = json.loads(value) if value else None
    except ValueError as exc:
        raise InvalidInput(f"binary-mode record value is not JSON: {exc}") from exc
    try:
        return CloudEvent.model_validate({**attrs, "datacontenttype": content_type, "data": data})
    except ValidationError as exc:
        raise InvalidInput(f"invalid CloudEvents attributes: {exc}") from exc


def is_structured(headers: Sequence[tuple[str, bytes]]) -> bool:
    return any(
        name.lower() == "content-type" and value.decode().startswith(STRUCTURED_CONTENT_TYPE)
        for name, value in headers
    )
