"""The rows notify keeps about datasets, agreements and consents.

The same shapes in PostgreSQL (``0001_entitlements.sql``) and in memory
(:class:`~datapolis_notify.entitlements.view.Entitlements`): the projection
writes them, a snapshot reads them back, events change them. Pure data: no
I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from datapolis_notify.ports import AccessLevel, DatasetView

AgreementStatus = Literal["requested", "granted", "refused", "revoked", "terminated", "expired"]
ConsentStatus = Literal["granted", "withdrawn", "expired"]


class Row(Protocol):
    """A database row (asyncpg's Record) or any mapping."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class DatasetState:
    view: DatasetView
    # The highest schema version known and its top-level fields.
    schema_version: int | None = None
    fields: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AgreementState:
    agreement_id: str
    dataset_id: str
    publisher_id: str
    consumer_id: str
    status: AgreementStatus
    purposes: frozenset[str]
    # As consent records them: top-level names or dotted paths
    # ("address.city"); the delivery projects a record to these.
    fields: frozenset[str]
    valid_from: datetime | None
    valid_until: datetime | None
    # The ledger row of the change this state shows: a change with a lower
    # (older) sequence never replaces it.
    ledger_sequence: int

    def active_at(self, now: datetime) -> bool:
        return (
            self.status == "granted"
            and self.valid_from is not None
            and self.valid_until is not None
            and self.valid_from <= now < self.valid_until
        )


@dataclass(frozen=True, slots=True)
class ConsentState:
    consent_id: str
    dataset_id: str
    subject_id: str
    consumer_id: str
    agreement_id: str
    purpose: str
    status: ConsentStatus
    valid_from: datetime | None
    valid_until: datetime | None
    ledger_sequence: int

    def active_at(self, now: datetime) -> bool:
        return (
            self.status == "granted"
            and self.valid_from is not None
            and self.valid_until is not None
            and self.valid_from <= now < self.valid_until
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every row at one instant, and the next offset to read per topic
    partition (topic, partition) for the changes after it."""

    datasets: list[DatasetState] = field(default_factory=list)
    agreements: list[AgreementState] = field(default_factory=list)
    consents: list[ConsentState] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


def dataset_from_row(row: Row) -> DatasetState:
    access_level: AccessLevel = row["access_level"]
    return DatasetState(
        view=DatasetView(
            dataset_id=row["dataset_id"],
            slug=row["slug"],
            publisher_id=row["publisher_id"],
            access_level=access_level,
            topic_name=row["topic_name"],
            key_field=row["key_field"],
            subject_field=row["subject_field"],
            theme=row["theme"],
            retired=row["retired_at"] is not None,
        ),
        schema_version=row["schema_version"],
        fields=frozenset(row["fields"] or ()),
    )


def agreement_from_row(row: Row) -> AgreementState:
    return AgreementState(
        agreement_id=row["agreement_id"],
        dataset_id=row["dataset_id"],
        publisher_id=row["publisher_id"],
        consumer_id=row["consumer_id"],
        status=row["status"],
        purposes=frozenset(row["purposes"] or ()),
        fields=frozenset(row["fields"] or ()),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        ledger_sequence=row["ledger_sequence"],
    )


def consent_from_row(row: Row) -> ConsentState:
    return ConsentState(
        consent_id=row["consent_id"],
        dataset_id=row["dataset_id"],
        subject_id=row["subject_id"],
        consumer_id=row["consumer_id"],
        agreement_id=row["agreement_id"],
        purpose=row["purpose"],
        status=row["status"],
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        ledger_sequence=row["ledger_sequence"],
    )


def top_level_fields(json_schema: Mapping[str, Any]) -> frozenset[str]:
    """The top-level property names of a dataset's JSON Schema."""
    properties = json_schema.get("properties")
    return frozenset(properties) if isinstance(properties, Mapping) else frozenset()
