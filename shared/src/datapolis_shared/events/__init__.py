"""Event contracts. Importing this package registers every control event."""

from datapolis_shared.events import catalog, consent, ingest
from datapolis_shared.events.base import (
    CATALOG_EVENTS,
    CONSENT_EVENTS,
    CONTROL_TOPICS,
    INGEST_EVENTS,
    INGEST_REJECTED,
    Event,
    data_topic,
    parse_event,
    raw_topic,
    registry,
)
from datapolis_shared.events.cloudevents import CloudEvent

__all__ = [
    "CATALOG_EVENTS",
    "CONSENT_EVENTS",
    "CONTROL_TOPICS",
    "INGEST_EVENTS",
    "INGEST_REJECTED",
    "CloudEvent",
    "Event",
    "catalog",
    "consent",
    "data_topic",
    "ingest",
    "parse_event",
    "raw_topic",
    "registry",
]
