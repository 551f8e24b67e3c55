"""Events of the catalog: organisations, API keys, datasets, schema versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from datapolis_shared.events.base import CATALOG_EVENTS, Event, register

AccessLevel = Literal["open", "shared", "personal"]


class _CatalogEvent(Event):
    topic: ClassVar[str] = CATALOG_EVENTS
    source: ClassVar[str] = "/datapolis/catalog"


@register
class OrganisationRegistered(_CatalogEvent):
    type: ClassVar[str] = "org.datapolis.catalog.organisation.registered.v1"
    key_field: ClassVar[str] = "org_id"
    org_id: str
    name: str
    kind: str


@register
class ApiKeyIssued(_CatalogEvent):
    """Carries the key's hash, never the key: services verify keys locally."""

    type: ClassVar[str] = "org.datapolis.catalog.apikey.issued.v1"
    key_field: ClassVar[str] = "key_id"
    key_id: str
    org_id: str
    scopes: list[str]
    secret_hash: str
    issued_at: datetime


@register
class ApiKeyRevoked(_CatalogEvent):
    type: ClassVar[str] = "org.datapolis.catalog.apikey.revoked.v1"
    key_field: ClassVar[str] = "key_id"
    key_id: str
    org_id: str
    revoked_at: datetime


@register
class DatasetRegistered(_CatalogEvent):
    type: ClassVar[str] = "org.datapolis.catalog.dataset.registered.v1"
    key_field: ClassVar[str] = "dataset_id"
    dataset_id: str
    slug: str
    publisher_id: str
    access_level: AccessLevel
    key_field_name: str | None = None
    subject_field: str | None = None
    topic_name: str


@register
class DatasetUpdated(_CatalogEvent):
    type: ClassVar[str] = "org.datapolis.catalog.dataset.updated.v1"
    key_field: ClassVar[str] = "dataset_id"
    dataset_id: str
    slug: str
    changes: dict[str, Any]


@register
class DatasetRetired(_CatalogEvent):
    type: ClassVar[str] = "org.datapolis.catalog.dataset.retired.v1"
    key_field: ClassVar[str] = "dataset_id"
    dataset_id: str
    slug: str


@register
class SchemaVersionAdded(_CatalogEvent):
    type: ClassVar[str] = "org.datapolis.catalog.schema.added.v1"
    key_field: ClassVar[str] = "dataset_id"
    dataset_id: str
    slug: str
    version: int
    major: int
    topic_name: str
    json_schema: dict[str, Any]
