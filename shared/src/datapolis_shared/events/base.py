"""Control events: frozen pydantic models, past-tense names, version in the type.

An event class declares its CloudEvents ``type`` (``org.datapolis.<area>.<what>.vN``),
its topic and the field that keys it. :func:`registry` maps every type to its
class so a consumer can parse what it reads; :data:`UPCASTERS` turns an older
version's data into the current one's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from datapolis_shared.errors import InvalidInput
from datapolis_shared.events.cloudevents import CloudEvent

CATALOG_EVENTS = "datapolis.catalog.events"
CONSENT_EVENTS = "datapolis.consent.events"
INGEST_EVENTS = "datapolis.ingest.events"
INGEST_REJECTED = "datapolis.ingest.rejected"

CONTROL_TOPICS = (CATALOG_EVENTS, CONSENT_EVENTS, INGEST_EVENTS, INGEST_REJECTED)


def data_topic(slug: str) -> str:
    return f"data.{slug}"


def raw_topic(slug: str) -> str:
    return f"raw.{slug}"


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ClassVar[str]
    topic: ClassVar[str]
    source: ClassVar[str]
    key_field: ClassVar[str]

    def key(self) -> str:
        return str(getattr(self, self.key_field))

    def to_cloudevent(self, *, id: str | None = None) -> CloudEvent:
        extra = {"id": id} if id else {}
        return CloudEvent(
            source=self.source,
            type=self.type,
            subject=self.key(),
            data=self.model_dump(mode="json"),
            **extra,
        )


_REGISTRY: dict[str, type[Event]] = {}

# type of an older version -> (current type, function from old data to new data)
UPCASTERS: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {}


def register(cls: type[Event]) -> type[Event]:
    if cls.type in _REGISTRY:
        raise RuntimeError(f"event type {cls.type} registered twice")
    _REGISTRY[cls.type] = cls
    return cls


def registry() -> dict[str, type[Event]]:
    return dict(_REGISTRY)


def parse_event(envelope: CloudEvent) -> Event:
    """The typed event inside an envelope, upcast to the current version."""
    type_, data = envelope.type, envelope.data
    while type_ in UPCASTERS:
        type_, upcast = UPCASTERS[type_]
        data = upcast(dict(data))
    cls = _REGISTRY.get(type_)
    if cls is None:
        raise InvalidInput(f"unknown event type {envelope.type!r}", code="unknown-event-type")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"invalid {type_} data: {exc}", code="invalid-event") from exc
