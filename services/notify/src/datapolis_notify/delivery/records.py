"""Records as read from a dataset topic, and what a delivery makes of them.

Pure functions: no I/O, so the rules of a delivery (filter, projection,
message shape, message id) are tested without Kafka or PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from datapolis_notify.ports import DatasetView, Decision, Entitled, NotEntitled
from datapolis_notify.projection import project, subject_id

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
EVENT_CONTENT_TYPE = "application/cloudevents+json"
# Used when a record carries no ce_type header (produced straight to Kafka).
DEFAULT_RECORD_TYPE = "org.datapolis.record.v1"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of a dataset topic, unfiltered and unprojected: what the
    durable queue keeps, so every attempt decides and projects afresh."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    headers: Mapping[str, str]
    timestamp_ms: int

    @property
    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "value": self.value,
            "headers": dict(self.headers),
            "timestamp": self.timestamp_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceRecord:
        return cls(
            topic=str(data["topic"]),
            partition=int(data["partition"]),
            offset=int(data["offset"]),
            key=None if data.get("key") is None else str(data["key"]),
            value=data.get("value"),
            headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
            timestamp_ms=int(data.get("timestamp") or 0),
        )


def decode_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {name: raw.decode("utf-8", "replace") for name, raw in headers or ()}


def subject_of(record: SourceRecord, dataset: DatasetView | None) -> str | None:
    return subject_id(record.value, dataset.subject_field if dataset is not None else None)


@dataclass(frozen=True, slots=True)
class Decided:
    """One record of a message at one attempt: its decision and, when
    entitled, what leaves the platform."""

    record: SourceRecord
    decision: Decision
    data: Any = None

    @property
    def entitled(self) -> Entitled | None:
        return self.decision if isinstance(self.decision, Entitled) else None

    @property
    def refusal(self) -> NotEntitled | None:
        return self.decision if isinstance(self.decision, NotEntitled) else None


def decided(record: SourceRecord, decision: Decision, asked: frozenset[str] | None) -> Decided:
    if isinstance(decision, Entitled):
        # The agreement's paths narrowed by the subscription's.
        return Decided(record, decision, project(record.value, decision.fields, asked))
    return Decided(record, decision)


def message_id(subscription_id: str, records: Sequence[SourceRecord]) -> str:
    """Stable for one subscription and one run of records: a message sent
    again after a crash (the same records read again) has the same id, so
    a receiver deduplicates on ``webhook-id``."""
    first, last = records[0], records[-1]
    seed = f"{subscription_id}|{first.coordinates}|{last.coordinates}|{len(records)}"
    digest = hashlib.sha256(seed.encode()).digest()[:16]
    return "msg_" + base64.b32encode(digest).decode().rstrip("=").lower()


def cloud_event(record: SourceRecord, data: Any, dataset_id: str | None) -> dict[str, Any]:
    """A record as a structured CloudEvent: its own ce_* attributes when it
    came with them (ingest's binary mode), its coordinates otherwise."""
    headers = record.headers
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": headers.get("ce_id") or record.coordinates,
        "source": headers.get("ce_source") or f"/datapolis/topics/{record.topic}",
        "type": headers.get("ce_type") or DEFAULT_RECORD_TYPE,
        "time": headers.get("ce_time")
        or datetime.fromtimestamp(record.timestamp_ms / 1000, UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }
    if record.key is not None:
        event["subject"] = record.key
    if dataset_id is not None:
        event["datasetid"] = dataset_id
    return event


def batch_body(events: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps(list(events), separators=(",", ":"), default=str).encode()


def relied_on(records: Sequence[Decided]) -> tuple[list[str], list[str]]:
    """The agreement and consent ids a message relied on, for the log."""
    agreements: set[str] = set()
    consents: set[str] = set()
    for item in records:
        entitled = item.entitled
        if entitled is None:
            continue
        if entitled.agreement_id:
            agreements.add(entitled.agreement_id)
        if entitled.consent_id:
            consents.add(entitled.consent_id)
    return sorted(agreements), sorted(consents)
