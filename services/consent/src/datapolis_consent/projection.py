"""Consent's projection of catalog's datasets, kept from ``datapolis.catalog.events``.

Each event is applied once: its id goes into the inbox in the transaction
that applies it, so a redelivered event changes nothing. The events of one
dataset share a key, hence a partition, and arrive in the order catalog
committed them:

- ``DatasetRegistered`` writes the dataset's row: publisher, access level,
  key and subject fields;
- ``SchemaVersionAdded`` records the version's fields; the highest version
  known is the dataset's current one (a version is never replaced by a lower
  one, whatever order versions are applied in);
- ``DatasetUpdated`` brings the slug; its ``changes`` (title, licence,
  retention...) hold nothing consent keeps: the access level, the publisher
  and the key and subject fields are fixed at registration;
- ``DatasetRetired`` records when the dataset was retired and calls the
  retirement hook once, in the same transaction (the agreements code ends the
  dataset's agreements there).

Catalog's other events (organisations, keys) are skipped. A record that is
not a catalog event, or an event that does not parse, goes to the dead
letters (the consumer loop's rule) and the partition moves on. An event that
fails because consent's tables are not there (the service started before its
migration) is not the event's fault: the failure is reported as
``Unavailable`` and the loop holds the record until the tables exist.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from datapolis_consent.agreements import on_dataset_retired
from datapolis_consent.datasets import Dataset, dataset_from_row
from datapolis_consent.fields import schema_fields
from datapolis_shared.errors import Unavailable
from datapolis_shared.events.base import Event, parse_event
from datapolis_shared.events.catalog import (
    DatasetRegistered,
    DatasetRetired,
    DatasetUpdated,
    SchemaVersionAdded,
)
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.postgres import inbox
from datapolis_shared.postgres.pool import Connection, Pool

log = logging.getLogger(__name__)

# The consumer's name: its readiness check is ``consumer:datasets``, its
# inbox rows and its consumer group carry it too.
CONSUMER = "datasets"
APPLIED_EVENT_TYPES = frozenset(
    {DatasetRegistered.type, SchemaVersionAdded.type, DatasetUpdated.type, DatasetRetired.type}
)

RetirementHook = Callable[[Connection, Dataset], Awaitable[None]]

TABLES_PRESENT = """
SELECT to_regclass('datasets') IS NOT NULL AND to_regclass('dataset_schema_versions') IS NOT NULL
"""

UPSERT_DATASET = """
INSERT INTO datasets (dataset_id, slug, publisher_id, access_level, key_field, subject_field)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (dataset_id) DO UPDATE SET
    slug = EXCLUDED.slug,
    publisher_id = EXCLUDED.publisher_id,
    access_level = EXCLUDED.access_level,
    key_field = EXCLUDED.key_field,
    subject_field = EXCLUDED.subject_field,
    updated_at = now()
"""
INSERT_SCHEMA_VERSION = """
INSERT INTO dataset_schema_versions (dataset_id, version, major, fields, field_paths)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (dataset_id, version) DO NOTHING
"""
# The dataset's current schema: the highest version known, never a lower one.
ADOPT_LATEST_SCHEMA = """
UPDATE datasets d
SET schema_version = v.version, fields = v.fields, field_paths = v.field_paths,
    updated_at = now()
FROM (
    SELECT version, fields, field_paths FROM dataset_schema_versions
    WHERE dataset_id = $1 ORDER BY version DESC LIMIT 1
) v
WHERE d.dataset_id = $1 AND (d.schema_version IS NULL OR d.schema_version < v.version)
"""
RENAME_DATASET = """
UPDATE datasets SET slug = $2, updated_at = now() WHERE dataset_id = $1 AND slug <> $2
"""
# Only a live dataset is retired: the hook runs once per retirement even if
# catalog announced it twice under two event ids.
RETIRE_DATASET = """
UPDATE datasets SET retired_at = $2, updated_at = now()
WHERE dataset_id = $1 AND retired_at IS NULL
RETURNING dataset_id, slug, publisher_id, access_level, key_field, subject_field,
          schema_version, fields, field_paths, retired_at
"""


class DatasetProjection:
    """Applies catalog's dataset events to consent's tables."""

    def __init__(self, pool: Pool, *, on_retired: RetirementHook = on_dataset_retired) -> None:
        self._pool = pool
        self._on_retired = on_retired

    async def on_catalog_event(self, value: bytes) -> None:
        """Apply one record of the catalog events topic (other events are skipped)."""
        envelope = from_structured(value)
        if envelope.type not in APPLIED_EVENT_TYPES:
            return
        event = parse_event(envelope)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if await inbox.first_time(conn, CONSUMER, envelope.id):
                    await apply_event(conn, event, at=envelope.time, on_retired=self._on_retired)
        except Exception:
            # Asked only on failure: a healthy event costs no extra query.
            await self.require_tables()
            raise

    async def require_tables(self) -> None:
        """Raise ``Unavailable`` unless consent's dataset tables exist (the
        consumer loop's probe: it holds its record instead of parking it)."""
        if not await self._pool.fetchval(TABLES_PRESENT):
            raise Unavailable(
                "consent's dataset tables do not exist: run `python -m datapolis_consent migrate`"
            )


async def apply_event(
    conn: Connection,
    event: Event,
    *,
    at: datetime,
    on_retired: RetirementHook = on_dataset_retired,
) -> None:
    """Write one dataset event to consent's tables, in the caller's
    transaction; ``at`` is when catalog made the change."""
    if isinstance(event, DatasetRegistered):
        await conn.execute(
            UPSERT_DATASET,
            event.dataset_id,
            event.slug,
            event.publisher_id,
            event.access_level,
            event.key_field_name,
            event.subject_field,
        )
        # A version applied before its dataset (it cannot be in catalog's
        # order, but a dataset's registration may have been dead-lettered
        # and replayed) becomes current now.
        await conn.execute(ADOPT_LATEST_SCHEMA, event.dataset_id)
    elif isinstance(event, SchemaVersionAdded):
        found = schema_fields(event.json_schema)
        await conn.execute(
            INSERT_SCHEMA_VERSION,
            event.dataset_id,
            event.version,
            event.major,
            list(found.fields),
            list(found.paths),
        )
        await conn.execute(ADOPT_LATEST_SCHEMA, event.dataset_id)
    elif isinstance(event, DatasetUpdated):
        await conn.execute(RENAME_DATASET, event.dataset_id, event.slug)
    elif isinstance(event, DatasetRetired):
        row = await conn.fetchrow(RETIRE_DATASET, event.dataset_id, at)
        if row is None:
            log.info(
                "dataset %s retired: already retired, or never registered here", event.dataset_id
            )
            return
        await on_retired(conn, dataset_from_row(row))
