"""Notify's PostgreSQL projection of datasets, agreements and consents.

The notify worker follows ``datapolis.catalog.events`` and
``datapolis.consent.events`` into the tables of ``0001_entitlements.sql``,
in one consumer group shared by its replicas. Each record is applied in one
transaction that also:

- records its event id in the inbox, so a redelivered event changes nothing;
- moves ``entitlement_offsets`` (the next offset of its topic partition)
  forward, so a snapshot of the tables and those offsets agree: a process
  loads both in one transaction and reads the topics on from there
  (:mod:`datapolis_notify.entitlements.feed`).

An agreement's or consent's row keeps the ledger sequence of the change it
shows, and a change with a lower one never overwrites it. The changes of one
dataset share a key, hence a partition, and arrive in catalog's order; a
schema version never replaces a higher one. Events notify does not keep
(organisations, keys) only move the offsets.

A record that is not an event, or does not parse, goes to the dead letters
(the consumer loop's rule); while notify's tables are missing (started before
its migration) the loop holds the record instead.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord

from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.entitlements.state import (
    Snapshot,
    agreement_from_row,
    consent_from_row,
    dataset_from_row,
    top_level_fields,
)
from datapolis_notify.entitlements.view import (
    APPLIED_EVENT_TYPES,
    CONSENT_TYPES,
    UNREADABLE_SEQUENCE,
)
from datapolis_shared.errors import InvalidInput, Unavailable
from datapolis_shared.events.base import Event, parse_event
from datapolis_shared.events.catalog import (
    DatasetRegistered,
    DatasetRetired,
    DatasetUpdated,
    SchemaVersionAdded,
)
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.events.consent import (
    AgreementAmended,
    AgreementExpired,
    AgreementGranted,
    AgreementRefused,
    AgreementRequested,
    AgreementRevoked,
    AgreementTerminated,
    ConsentExpired,
    ConsentGranted,
    ConsentWithdrawn,
)
from datapolis_shared.kafka import ConsumerLoop
from datapolis_shared.postgres import inbox
from datapolis_shared.postgres.pool import Connection, Pool
from datapolis_shared.runtime import Runtime

log = logging.getLogger(__name__)

# The consumer's name: its inbox rows, readiness check (consumer:entitlements)
# and consumer group carry it.
CONSUMER = "entitlements"

TABLES_PRESENT = """
SELECT to_regclass('datasets') IS NOT NULL AND to_regclass('agreements') IS NOT NULL
   AND to_regclass('consents') IS NOT NULL AND to_regclass('entitlement_offsets') IS NOT NULL
"""

ADVANCE_OFFSET = """
INSERT INTO entitlement_offsets (topic, partition, next_offset) VALUES ($1, $2, $3)
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = GREATEST(entitlement_offsets.next_offset, EXCLUDED.next_offset)
"""

REGISTER_DATASET = """
INSERT INTO datasets (dataset_id, slug, publisher_id, access_level, topic_name, key_field,
                      subject_field, theme, registered_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
ON CONFLICT (dataset_id) DO UPDATE SET
    slug = EXCLUDED.slug,
    publisher_id = EXCLUDED.publisher_id,
    access_level = EXCLUDED.access_level,
    topic_name = EXCLUDED.topic_name,
    key_field = EXCLUDED.key_field,
    subject_field = EXCLUDED.subject_field,
    theme = COALESCE(EXCLUDED.theme, datasets.theme),
    updated_at = now()
"""
ADOPT_SCHEMA = """
UPDATE datasets SET schema_version = $2, fields = $3, updated_at = now()
WHERE dataset_id = $1 AND (schema_version IS NULL OR schema_version < $2)
"""
RENAME_DATASET = "UPDATE datasets SET slug = $2, updated_at = now() WHERE dataset_id = $1"
SET_THEME = "UPDATE datasets SET theme = $2, updated_at = now() WHERE dataset_id = $1"
RETIRE_DATASET = """
UPDATE datasets SET retired_at = $2, updated_at = now()
WHERE dataset_id = $1 AND retired_at IS NULL
"""

# A change with its terms (requested, granted, amended).
AGREEMENT_TERMS = """
INSERT INTO agreements (agreement_id, dataset_id, publisher_id, consumer_id, status, purposes,
                        fields, valid_from, valid_until, ledger_sequence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (agreement_id) DO UPDATE SET
    status = EXCLUDED.status,
    purposes = EXCLUDED.purposes,
    fields = EXCLUDED.fields,
    valid_from = EXCLUDED.valid_from,
    valid_until = EXCLUDED.valid_until,
    ledger_sequence = EXCLUDED.ledger_sequence,
    updated_at = now()
WHERE agreements.ledger_sequence < EXCLUDED.ledger_sequence
"""
# An end (refused, revoked, terminated, expired): the terms stay; an end
# whose terms were never seen is kept without any (it can only refuse).
AGREEMENT_STATUS = """
INSERT INTO agreements (agreement_id, dataset_id, publisher_id, consumer_id, status,
                        ledger_sequence)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (agreement_id) DO UPDATE SET
    status = EXCLUDED.status,
    ledger_sequence = EXCLUDED.ledger_sequence,
    updated_at = now()
WHERE agreements.ledger_sequence < EXCLUDED.ledger_sequence
"""
CONSENT_GRANTED = """
INSERT INTO consents (consent_id, dataset_id, subject_id, consumer_id, agreement_id, purpose,
                      status, valid_from, valid_until, ledger_sequence)
VALUES ($1, $2, $3, $4, $5, $6, 'granted', $7, $8, $9)
ON CONFLICT (consent_id) DO UPDATE SET
    status = EXCLUDED.status,
    valid_from = EXCLUDED.valid_from,
    valid_until = EXCLUDED.valid_until,
    ledger_sequence = EXCLUDED.ledger_sequence,
    updated_at = now()
WHERE consents.ledger_sequence < EXCLUDED.ledger_sequence
"""
CONSENT_STATUS = """
INSERT INTO consents (consent_id, dataset_id, subject_id, consumer_id, agreement_id, purpose,
                      status, ledger_sequence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (consent_id) DO UPDATE SET
    status = EXCLUDED.status,
    ledger_sequence = EXCLUDED.ledger_sequence,
    updated_at = now()
WHERE consents.ledger_sequence < EXCLUDED.ledger_sequence
"""

# An unreadable change (see ``Entitlements.distrust``): ended until a newer one.
DISTRUST_AGREEMENT = """
UPDATE agreements SET status = 'terminated', ledger_sequence = $2, updated_at = now()
WHERE agreement_id = $1 AND ledger_sequence < $2
"""
DISTRUST_CONSENT = """
UPDATE consents SET status = 'expired', ledger_sequence = $2, updated_at = now()
WHERE consent_id = $1 AND ledger_sequence < $2
"""

_AGREEMENT_ENDS: dict[type[Event], str] = {
    AgreementRefused: "refused",
    AgreementRevoked: "revoked",
    AgreementTerminated: "terminated",
    AgreementExpired: "expired",
}
_CONSENT_ENDS: dict[type[Event], str] = {ConsentWithdrawn: "withdrawn", ConsentExpired: "expired"}


class EntitlementProjection:
    """Applies catalog's and consent's events to notify's tables."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def on_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one record of either topic, and move its partition's offset."""
        envelope = from_structured(record.value or b"")
        event = None
        if envelope.type in APPLIED_EVENT_TYPES or envelope.type.startswith(CONSENT_TYPES):
            try:
                event = parse_event(envelope)
            except InvalidInput:
                # An unreadable change of an agreement or consent may be an
                # end: refuse what it is about (as every view does), then
                # let the loop park it on the dead letters. No inbox row: a
                # replay after an upgrade applies it for real.
                if envelope.type.startswith(CONSENT_TYPES) and isinstance(envelope.data, dict):
                    await self._distrust(record, envelope.data)
                raise
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if event is not None and await inbox.first_time(conn, CONSUMER, envelope.id):
                    await apply_event(conn, event, at=envelope.time)
                await conn.execute(
                    ADVANCE_OFFSET, record.topic, record.partition, record.offset + 1
                )
        except Exception:
            # Asked only on failure: a healthy event costs no extra query.
            await self.require_tables()
            raise

    async def _distrust(self, record: ConsumerRecord[bytes, bytes], data: dict[str, Any]) -> None:
        sequence = data.get("ledger_sequence")
        if not isinstance(sequence, int):
            sequence = UNREADABLE_SEQUENCE
        consent_id, agreement_id = data.get("consent_id"), data.get("agreement_id")
        async with self._pool.acquire() as conn, conn.transaction():
            if isinstance(consent_id, str):
                await conn.execute(DISTRUST_CONSENT, consent_id, sequence)
            elif isinstance(agreement_id, str):
                await conn.execute(DISTRUST_AGREEMENT, agreement_id, sequence)
            await conn.execute(ADVANCE_OFFSET, record.topic, record.partition, record.offset + 1)

    async def require_tables(self) -> None:
        """Raise ``Unavailable`` unless notify's tables exist (the consumer
        loop's probe: it holds its record instead of parking it)."""
        if not await self._pool.fetchval(TABLES_PRESENT):
            raise Unavailable(
                "notify's entitlement tables do not exist: run `python -m datapolis_notify migrate`"
            )


async def apply_event(conn: Connection, event: Event, *, at: datetime) -> None:
    """Write one event to notify's tables, in the caller's transaction; ``at``
    is when its service made the change."""
    if isinstance(event, DatasetRegistered | SchemaVersionAdded | DatasetUpdated | DatasetRetired):
        await _apply_dataset_event(conn, event, at=at)
    elif isinstance(event, AgreementRequested | AgreementGranted | AgreementAmended):
        await conn.execute(
            AGREEMENT_TERMS,
            event.agreement_id,
            event.dataset_id,
            event.publisher_org_id,
            event.consumer_org_id,
            "requested" if isinstance(event, AgreementRequested) else "granted",
            event.purposes,
            event.fields,
            event.valid_from,
            event.valid_until,
            event.ledger_sequence,
        )
    elif isinstance(
        event, AgreementRefused | AgreementRevoked | AgreementTerminated | AgreementExpired
    ):
        await _end_agreement(conn, event)
    elif isinstance(event, ConsentGranted):
        await conn.execute(
            CONSENT_GRANTED,
            event.consent_id,
            event.dataset_id,
            event.subject_id,
            event.consumer_org_id,
            event.agreement_id,
            event.purpose,
            event.valid_from,
            event.valid_until,
            event.ledger_sequence,
        )
    elif isinstance(event, ConsentWithdrawn | ConsentExpired):
        await conn.execute(
            CONSENT_STATUS,
            event.consent_id,
            event.dataset_id,
            event.subject_id,
            event.consumer_org_id,
            event.agreement_id,
            event.purpose,
            _CONSENT_ENDS[type(event)],
            event.ledger_sequence,
        )


async def _end_agreement(
    conn: Connection,
    event: AgreementRefused | AgreementRevoked | AgreementTerminated | AgreementExpired,
) -> None:
    await conn.execute(
        AGREEMENT_STATUS,
        event.agreement_id,
        event.dataset_id,
        event.publisher_org_id,
        event.consumer_org_id,
        _AGREEMENT_ENDS[type(event)],
        event.ledger_sequence,
    )


async def _apply_dataset_event(
    conn: Connection,
    event: DatasetRegistered | SchemaVersionAdded | DatasetUpdated | DatasetRetired,
    *,
    at: datetime,
) -> None:
    if isinstance(event, DatasetRegistered):
        await conn.execute(
            REGISTER_DATASET,
            event.dataset_id,
            event.slug,
            event.publisher_id,
            event.access_level,
            event.topic_name,
            event.key_field_name,
            event.subject_field,
            event.theme,
            at,
        )
    elif isinstance(event, SchemaVersionAdded):
        await conn.execute(
            ADOPT_SCHEMA,
            event.dataset_id,
            event.version,
            sorted(top_level_fields(event.json_schema)),
        )
    elif isinstance(event, DatasetUpdated):
        await conn.execute(RENAME_DATASET, event.dataset_id, event.slug)
        if "theme" in event.changes.changed:
            await conn.execute(SET_THEME, event.dataset_id, event.changes.theme)
    else:
        await conn.execute(RETIRE_DATASET, event.dataset_id, at)


async def load_snapshot(pool: Pool, topics: tuple[str, ...]) -> Snapshot:
    """Every row and the offsets of ``topics`` as of one instant (one
    repeatable-read transaction): the changes after it are exactly those
    from the offsets on."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        datasets = await conn.fetch("SELECT * FROM datasets")
        agreements = await conn.fetch("SELECT * FROM agreements")
        consents = await conn.fetch("SELECT * FROM consents")
        offsets = await conn.fetch(
            "SELECT topic, partition, next_offset FROM entitlement_offsets"
            " WHERE topic = ANY($1::text[])",
            list(topics),
        )
    return Snapshot(
        datasets=[dataset_from_row(r) for r in datasets],
        agreements=[agreement_from_row(r) for r in agreements],
        consents=[consent_from_row(r) for r in consents],
        offsets={(r["topic"], r["partition"]): r["next_offset"] for r in offsets},
    )


def start_entitlement_projection(runtime: Runtime, settings: EntitlementSettings) -> ConsumerLoop:
    """Follow catalog's and consent's events into notify's tables (the
    worker's job; call it once connected). One consumer group shared by the
    worker's replicas; ``/readyz`` reports it as ``consumer:entitlements``.
    Besides PostgreSQL answering, it needs notify's tables: started before
    the migration, it holds its record rather than parking events."""
    projection = EntitlementProjection(runtime.pool)
    return runtime.add_consumer(
        name=CONSUMER,
        topics=[settings.catalog_events_topic, settings.consent_events_topic],
        handler=projection.on_record,
        dependencies=[projection.require_tables],
    )
