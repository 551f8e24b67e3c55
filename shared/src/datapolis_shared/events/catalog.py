"""Events of the catalog: organisations, API keys, datasets, schema versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

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
    # The theme at registration (later changes come in DatasetUpdated), so a
    # reader knows it without catalog's API; absent from older events.
    theme: str | None = None


class DatasetChanges(BaseModel):
    """What an update of a dataset's description changed, with the new values.

    Only the fields that changed are present, on the wire as in
    ``model_fields_set`` (``changed``): ``"update_frequency": null`` means it
    was cleared, its absence that it did not change. The access level, the
    key and subject fields and the publisher are fixed at registration and
    never appear here. Theme, licence and frequency are plain strings: their
    vocabularies are catalog's and may grow without breaking a reader.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str | None = None
    description: str | None = None
    theme: str | None = None
    keywords: tuple[str, ...] | None = None
    licence: str | None = None
    update_frequency: str | None = None
    spatial_coverage: str | None = None
    retention_days: int | None = None
    partitions: int | None = None

    @property
    def changed(self) -> frozenset[str]:
        return frozenset(self.model_fields_set)

    @model_serializer(mode="wrap")
    def _only_changed(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The same JSON catalog wrote when `changes` was a plain dict: the
        # changed fields only, so "not changed" and "cleared" stay apart.
        dumped: dict[str, Any] = handler(self)
        return {name: value for name, value in dumped.items() if name in self.model_fields_set}


@register
class DatasetUpdated(_CatalogEvent):
    type: ClassVar[str] = "org.datapolis.catalog.dataset.updated.v1"
    key_field: ClassVar[str] = "dataset_id"
    dataset_id: str
    slug: str
    changes: DatasetChanges


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
