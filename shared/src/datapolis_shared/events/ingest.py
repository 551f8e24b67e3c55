"""Events of the ingest service: batch statistics and dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from datapolis_shared.events.base import INGEST_EVENTS, INGEST_REJECTED, Event, register


class _IngestEvent(Event):
    source: ClassVar[str] = "/datapolis/ingest"
    key_field: ClassVar[str] = "dataset_id"


@register
class BatchIngested(_IngestEvent):
    type: ClassVar[str] = "org.datapolis.ingest.batch.ingested.v1"
    topic: ClassVar[str] = INGEST_EVENTS
    dataset_id: str
    slug: str
    producer_org_id: str
    channel: Literal["http", "kafka"]
    accepted: int
    rejected: int
    duplicates: int = 0
    received_at: datetime


class RecordError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str
    message: str


@register
class RecordRejected(_IngestEvent):
    """A dead letter: the original payload, why it was refused, who sent it."""

    type: ClassVar[str] = "org.datapolis.ingest.record.rejected.v1"
    topic: ClassVar[str] = INGEST_REJECTED
    dataset_id: str
    slug: str
    producer_org_id: str | None
    channel: Literal["http", "kafka"]
    payload: Any
    errors: list[RecordError]
    rejected_at: datetime
    # Set when a limit refused the record (record-too-deep, record-too-large).
    code: str | None = None
    schema_version: int | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
