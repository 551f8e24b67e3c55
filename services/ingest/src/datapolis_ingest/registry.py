"""Ingest's own view of the datasets: what catalog announced, kept in this
service's tables and, for the hot path, in memory with compiled validators.

Catalog is the authority; ingest never calls it. ``DatasetRegistered``,
``SchemaVersionAdded`` and ``DatasetRetired`` from ``datapolis.catalog.events``
are applied to the ``datasets`` and ``schema_versions`` tables (once each,
through the inbox), then the dataset is reloaded into memory from the tables.
``DatasetUpdated`` is skipped: it changes only a dataset's description, its
retention and partitions, none of which ingest uses (the access level, key and
subject fields and the publisher are fixed at registration).

Replicas share the consumer group, so each receives only some partitions of
the topic. The tables are what they share: the process that applies an event
announces it (``NOTIFY ingest_datasets``, delivered at commit) and every
process, API and worker replicas alike, reloads that dataset. A process that
lost its LISTEN connection may have missed announcements, so it reloads every
dataset when it listens again, and reports itself not ready in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from datapolis_ingest.propagation import RETRY_AFTER_S, SLUG, NotKnownYet, UnknownNames
from datapolis_ingest.validation import SchemaUnusable, Validator, compile_schema
from datapolis_shared.errors import Conflict, NotFound
from datapolis_shared.events.base import parse_event
from datapolis_shared.events.catalog import (
    DatasetRegistered,
    DatasetRetired,
    SchemaVersionAdded,
)
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.postgres import inbox
from datapolis_shared.postgres.pool import Connection, Pool, PooledConnection
from datapolis_shared.retry import Backoff, keep_running

log = logging.getLogger(__name__)

INBOX_CONSUMER = "dataset-registry"
# The catalog events that change what ingest accepts; it skips the others.
APPLIED_EVENT_TYPES = frozenset(
    {DatasetRegistered.type, SchemaVersionAdded.type, DatasetRetired.type}
)
# Payload: the id of a dataset whose rows changed. Channels are database-wide:
# a process also hears other schemas' ingest (tests), whose ids it does not
# find in its own tables, so their reloads change nothing.
CHANGES_CHANNEL = "ingest_datasets"
ANNOUNCE_CHANGE = "SELECT pg_notify($1, $2)"

UPSERT_DATASET = """
INSERT INTO datasets
    (dataset_id, slug, publisher_id, access_level, key_field, subject_field, topic_name)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (dataset_id) DO UPDATE SET
    slug = EXCLUDED.slug,
    publisher_id = EXCLUDED.publisher_id,
    access_level = EXCLUDED.access_level,
    key_field = EXCLUDED.key_field,
    subject_field = EXCLUDED.subject_field,
    topic_name = EXCLUDED.topic_name,
    updated_at = now()
"""
INSERT_SCHEMA_VERSION = """
INSERT INTO schema_versions (dataset_id, version, major, topic_name, json_schema)
VALUES ($1, $2, $3, $4, $5::jsonb)
ON CONFLICT (dataset_id, version) DO NOTHING
"""
RETIRE_DATASET = """
UPDATE datasets SET retired_at = coalesce(retired_at, now()), updated_at = now()
WHERE dataset_id = $1
"""
# A dataset with its current (highest) schema version, if it has one.
_SELECT_WITH_SCHEMA = """
SELECT d.dataset_id, d.slug, d.publisher_id, d.access_level, d.key_field, d.subject_field,
       d.topic_name, d.retired_at, s.version, s.major, s.topic_name AS schema_topic,
       s.json_schema
FROM datasets d
LEFT JOIN LATERAL (
    SELECT version, major, topic_name, json_schema FROM schema_versions v
    WHERE v.dataset_id = d.dataset_id ORDER BY version DESC LIMIT 1
) s ON true
"""
SELECT_DATASET = _SELECT_WITH_SCHEMA + " WHERE d.dataset_id = $1"
SELECT_ALL_DATASETS = _SELECT_WITH_SCHEMA + " ORDER BY d.updated_at"


@dataclass(frozen=True, slots=True)
class Dataset:
    """What ingest needs to accept a dataset's records, precomputed."""

    dataset_id: str
    slug: str
    publisher_id: str
    access_level: str
    key_field: str | None
    subject_field: str | None
    retired: bool
    topic: str
    schema_version: int | None
    major: int | None
    # Compiled on first use: a process catching up on catalog's history does
    # not pay for the schemas of datasets nobody pushes to.
    schema: LazyValidator | None
    # CloudEvents attributes of the dataset's records.
    ce_source: str
    ce_type: str
    dataschema: str | None

    @property
    def personal(self) -> bool:
        return self.access_level == "personal"

    def accepting(self) -> Validator:
        """The validator of the current schema, or why records are refused."""
        if self.retired:
            raise Conflict(
                f"dataset {self.slug!r} is retired and accepts no more records",
                code="dataset-retired",
                slug=self.slug,
            )
        if self.schema is None:
            # Catalog registers a dataset with its first schema version in one
            # transaction; ingest applies the two events one after the other.
            raise NotKnownYet(
                f"ingest knows dataset {self.slug!r} but not its schema yet; "
                f"retry in {RETRY_AFTER_S} s",
                code="schema-version-not-known-yet",
                slug=self.slug,
            )
        try:
            return self.schema.compiled()
        except SchemaUnusable as exc:
            raise Conflict(
                f"dataset {self.slug!r} has a schema ingest cannot use: {exc}",
                code="schema-unusable",
                slug=self.slug,
            ) from exc


class LazyValidator:
    """A schema version's validator, compiled once, when first needed."""

    __slots__ = ("_compiled", "_problem", "_schema_json")

    def __init__(self, schema_json: str | bytes) -> None:
        self._schema_json = schema_json
        self._compiled: Validator | None = None
        self._problem: SchemaUnusable | None = None

    def compiled(self) -> Validator:
        if self._compiled is None:
            if self._problem is not None:
                raise self._problem
            try:
                self._compiled = compile_schema(orjson.loads(self._schema_json))
            except (SchemaUnusable, orjson.JSONDecodeError) as exc:
                self._problem = SchemaUnusable(str(exc))
                log.warning("a schema is unusable: %s", exc)
                raise self._problem from exc
        return self._compiled


class DatasetRegistry:
    """The in-memory side: datasets by slug, validators compiled once per
    (dataset, schema version), kept in step with the tables by ``start``."""

    def __init__(
        self,
        pool: Pool,
        *,
        catalog_url: str,
        check_interval_s: float = 5.0,
        propagation_bound_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._unknown = UnknownNames(propagation_bound_s)
        self._catalog_url = catalog_url.rstrip("/")
        self._check_interval_s = check_interval_s
        self._by_slug: dict[str, Dataset] = {}
        self._by_id: dict[str, Dataset] = {}
        self._validators: dict[tuple[str, int], LazyValidator] = {}
        # One read-and-put at a time: two reloads of a dataset running side by
        # side could put the older snapshot last.
        self._reloading = asyncio.Lock()
        # Dataset ids announced by any process; None: the listener connection closed.
        self._changes: asyncio.Queue[str | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._not_listening: str | None = "not started"
        self._listener: PooledConnection | None = None
        self.listener_pid: int | None = None
        self.loaded = False
        # Catalog's events not applied yet by this process's registry consumer
        # (None: unknown). Set by ``follow_progress``.
        self._behind: Callable[[], int | None] = lambda: None

    def get(self, slug: str) -> Dataset | None:
        return self._by_slug.get(slug)

    def require(self, slug: str, *, asker: str) -> Dataset:
        """The dataset ``slug``; not known yet (retryable) while catalog may
        have registered it a moment ago, not found once it cannot have."""
        dataset = self._by_slug.get(slug)
        if dataset is not None:
            return dataset
        if not SLUG.fullmatch(slug) or self._settled(("dataset", asker, slug)):
            raise NotFound(f"no dataset {slug!r}", code="dataset-not-found", slug=slug)
        raise NotKnownYet(
            f"ingest does not know a dataset {slug!r} yet. If catalog registered it just "
            f"now, retry in {RETRY_AFTER_S} s: ingest learns a new dataset within "
            f"{self._unknown.bound_s:g} s of catalog's answer",
            code="dataset-not-known-yet",
            slug=slug,
        )

    def require_version(self, dataset: Dataset, version: int, *, asker: str) -> None:
        """Refuse to validate records of schema ``version`` under an older one."""
        current = dataset.schema_version
        if current is not None and version <= current:
            return
        if self._settled(("schema", asker, dataset.dataset_id, version)):
            raise Conflict(
                f"dataset {dataset.slug!r} has no schema version {version} "
                f"(its current version is {current})",
                code="schema-version-not-found",
                slug=dataset.slug,
                schema_version=version,
                current_version=current,
            )
        raise NotKnownYet(
            f"ingest does not know schema version {version} of {dataset.slug!r} yet "
            f"(it has version {current}). If catalog added it just now, retry in "
            f"{RETRY_AFTER_S} s: ingest learns a new schema version within "
            f"{self._unknown.bound_s:g} s of catalog's answer",
            code="schema-version-not-known-yet",
            slug=dataset.slug,
            schema_version=version,
            current_version=current,
        )

    def follow_progress(self, behind: Callable[[], int | None]) -> None:
        """How many of catalog's events the registry consumer has yet to apply."""
        self._behind = behind

    def _settled(self, name: tuple[str | int, ...]) -> bool:
        # Nothing is ruled out while this process may have missed changes or
        # is still reading catalog's events (a new consumer group starts from
        # the beginning of the topic): the bound holds only once caught up.
        caught_up = self._not_listening is None and self._behind() == 0
        return self._unknown.settled(name, caught_up=caught_up)

    def __len__(self) -> int:
        return len(self._by_slug)

    async def load_all(self) -> None:
        async with self._reloading:
            for row in await self._pool.fetch(SELECT_ALL_DATASETS):
                self._put(self._from_row(row))
        self.loaded = True
        log.info("dataset registry loaded: %d dataset(s)", len(self._by_slug))

    async def reload(self, dataset_id: str) -> None:
        async with self._reloading:
            row = await self._pool.fetchrow(SELECT_DATASET, dataset_id)
            if row is not None:
                self._put(self._from_row(row))

    async def on_catalog_event(self, value: bytes) -> None:
        """Apply one record of ``datapolis.catalog.events`` (others are skipped)."""
        envelope = from_structured(value)
        if envelope.type not in APPLIED_EVENT_TYPES:
            return
        event = parse_event(envelope)
        dataset_id = getattr(event, "dataset_id", None)
        async with self._pool.acquire() as conn, conn.transaction():
            if await inbox.first_time(conn, INBOX_CONSUMER, envelope.id):
                await apply_event(conn, event)
                if dataset_id:
                    await conn.execute(ANNOUNCE_CHANGE, CHANGES_CHANNEL, str(dataset_id))
        if dataset_id:
            # At once, without waiting for the announcement: this process is
            # up to date even while its listener is down.
            await self.reload(str(dataset_id))

    async def start(self) -> None:
        """Load every dataset, then follow the changes any process applies."""
        listener = await self._listen()
        self._task = asyncio.create_task(self._follow(listener), name="dataset-registry-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._not_listening = "stopped"

    async def problem(self) -> str | None:
        """Readiness: why the datasets in memory may be stale, or None."""
        if self._task is None or self._task.done():
            return "dataset registry listener not running"
        return self._not_listening

    async def _listen(self) -> PooledConnection:
        """LISTEN, then load everything: a change committed in between is both
        loaded and announced, none falls in a gap."""
        listener = await self._pool.acquire(timeout=self._check_interval_s)
        try:
            listener.add_termination_listener(self._on_lost)
            await listener.add_listener(CHANGES_CHANNEL, self._on_change)
            # Announcements queued before now are covered by the full load.
            while not self._changes.empty():
                self._changes.get_nowait()
            await self.load_all()
        except BaseException:
            await self._release(listener)
            raise
        self.listener_pid = listener.get_server_pid()
        self._not_listening = None
        return listener

    async def _follow(self, listener: PooledConnection | None) -> None:
        self._listener = listener
        try:
            await keep_running(
                self._apply_next_change,
                doing="dataset registry: following dataset changes (until it listens "
                "again the datasets in memory may be stale)",
                backoff=Backoff(initial_s=0.5, max_s=10.0),
            )
        finally:
            if self._listener is not None:
                await self._release(self._listener)
                self._listener = None

    async def _apply_next_change(self) -> None:
        """Listen again if the connection was lost, then reload the next
        announced dataset (or check the connection after a quiet interval)."""
        try:
            if self._listener is None:
                self._listener = await self._listen()
                log.info("dataset registry listening again")
            await self._apply_change(self._listener)
        except Exception:
            self._not_listening = "not listening for dataset changes (see the service's log)"
            if self._listener is not None:
                await self._release(self._listener)
                self._listener = None
            raise

    async def _apply_change(self, listener: PooledConnection) -> None:
        try:
            async with asyncio.timeout(self._check_interval_s):
                dataset_id = await self._changes.get()
        except TimeoutError:
            # A connection whose peer vanished stays silent: ask it.
            await listener.fetchval("SELECT 1", timeout=self._check_interval_s)
            return
        if dataset_id is None:
            raise ConnectionError("the LISTEN connection closed")
        await self.reload(dataset_id)

    def _on_change(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._changes.put_nowait(str(payload))

    def _on_lost(self, _conn: object) -> None:
        self._changes.put_nowait(None)

    async def _release(self, listener: PooledConnection) -> None:
        self.listener_pid = None
        with contextlib.suppress(Exception):
            listener.remove_termination_listener(self._on_lost)
            await listener.remove_listener(CHANGES_CHANNEL, self._on_change)
        with contextlib.suppress(Exception):
            await self._pool.release(listener)

    def _put(self, dataset: Dataset) -> None:
        previous = self._by_id.get(dataset.dataset_id)
        if previous is not None and previous.slug != dataset.slug:
            self._by_slug.pop(previous.slug, None)
        holder = self._by_slug.get(dataset.slug)
        # A slug freed by a retired dataset may be taken by a new one.
        if holder is None or holder.dataset_id == dataset.dataset_id or holder.retired:
            self._by_slug[dataset.slug] = dataset
        self._by_id[dataset.dataset_id] = dataset

    def _validator(self, dataset_id: str, version: int, schema_json: str) -> LazyValidator:
        key = (dataset_id, version)
        validator = self._validators.get(key)
        if validator is None:
            validator = LazyValidator(schema_json)
            self._validators[key] = validator
        return validator

    def _from_row(self, row: Any) -> Dataset:
        slug: str = row["slug"]
        version: int | None = row["version"]
        major: int | None = row["major"]
        return Dataset(
            dataset_id=row["dataset_id"],
            slug=slug,
            publisher_id=row["publisher_id"],
            access_level=row["access_level"],
            key_field=row["key_field"],
            subject_field=row["subject_field"],
            retired=row["retired_at"] is not None,
            topic=row["schema_topic"] or row["topic_name"],
            schema_version=version,
            major=major,
            schema=(
                self._validator(row["dataset_id"], version, row["json_schema"])
                if version is not None
                else None
            ),
            ce_source=f"/datapolis/ingest/{slug}",
            ce_type=f"org.datapolis.record.{slug}.v{major or 1}",
            dataschema=(
                f"{self._catalog_url}/datasets/{slug}/schemas/{version}"
                if version is not None
                else None
            ),
        )


async def apply_event(conn: Connection, event: object) -> None:
    """Write a catalog dataset event to ingest's tables (in the caller's transaction)."""
    if isinstance(event, DatasetRegistered):
        await conn.execute(
            UPSERT_DATASET,
            event.dataset_id,
            event.slug,
            event.publisher_id,
            event.access_level,
            event.key_field_name,
            event.subject_field,
            event.topic_name,
        )
    elif isinstance(event, SchemaVersionAdded):
        await conn.execute(
            INSERT_SCHEMA_VERSION,
            event.dataset_id,
            event.version,
            event.major,
            event.topic_name,
            orjson.dumps(event.json_schema).decode(),
        )
    elif isinstance(event, DatasetRetired):
        await conn.execute(RETIRE_DATASET, event.dataset_id)
