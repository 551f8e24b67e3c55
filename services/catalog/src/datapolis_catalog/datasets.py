"""Datasets and their schema versions: register, update, retire, evolve.

Every change and the event announcing it commit together (outbox). Only the
publisher of a dataset, with the ``publish`` scope, or the operator changes it.

Reading: any authenticated caller reads the metadata of every dataset, personal
ones included. Metadata is not data: a consumer has to find a personal dataset
to ask for an agreement and for consents, and DCAT-AP lists restricted datasets
with their access rights for the same reason. The records themselves stay
behind agreements and consents (consent and notify services).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datapolis_catalog.compatibility import backward_incompatibilities
from datapolis_catalog.provisioning import DAY_MS, Provisioner
from datapolis_catalog.schema_rules import check_dataset_schema
from datapolis_catalog.vocabulary import (
    OPEN_LICENCES,
    AccessLevel,
    Licence,
    Theme,
    UpdateFrequency,
)
from datapolis_shared.auth import Principal
from datapolis_shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from datapolis_shared.events import data_topic, raw_topic
from datapolis_shared.events.catalog import (
    DatasetChanges,
    DatasetRegistered,
    DatasetRetired,
    DatasetUpdated,
    SchemaVersionAdded,
)
from datapolis_shared.postgres import outbox
from datapolis_shared.postgres.pool import Connection, Pool

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_RETENTION_DAYS = 3650
MAX_PARTITIONS = 64

# -- SQL ------------------------------------------------------------------------

DATASET_COLUMNS = """
d.dataset_id, d.slug, d.title, d.description, d.publisher_id, o.name AS publisher_name,
d.theme, d.keywords, d.licence, d.access_level, d.key_field, d.subject_field,
d.update_frequency, d.spatial_coverage, d.retention_days, d.partitions, d.status,
d.schema_version, d.schema_major, d.topic_name, d.created_at, d.updated_at, d.retired_at,
NOT EXISTS (
    SELECT 1 FROM dataset_topics t WHERE t.dataset_id = d.dataset_id AND t.provisioned_at IS NULL
) AS topics_provisioned,
s.records_per_minute, s.accepted_last_hour, s.rejected_last_hour, s.rejection_rate,
s.last_record_at, s.updated_at AS stats_updated_at
"""
DATASET_FROM = """
FROM datasets d
JOIN organisations o ON o.org_id = d.publisher_id
LEFT JOIN dataset_stats s ON s.dataset_id = d.dataset_id
"""
SELECT_DATASET = f"SELECT {DATASET_COLUMNS} {DATASET_FROM} WHERE d.slug = $1"
SELECT_DATASET_FOR_UPDATE = """
SELECT dataset_id, slug, publisher_id, access_level, key_field, subject_field, licence, status,
       title, description, theme, keywords, update_frequency, spatial_coverage,
       schema_version, schema_major, topic_name, partitions, retention_days
FROM datasets WHERE slug = $1 FOR UPDATE
"""
ORGANISATION_EXISTS = "SELECT 1 FROM organisations WHERE org_id = $1"
INSERT_DATASET = """
INSERT INTO datasets (dataset_id, slug, title, description, publisher_id, theme, keywords, licence,
                      access_level, key_field, subject_field, update_frequency, spatial_coverage,
                      retention_days, partitions, topic_name)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
"""
INSERT_SCHEMA_VERSION = """
INSERT INTO schema_versions (dataset_id, version, major, topic_name, json_schema, created_by)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
RETURNING version, major, topic_name, json_schema, created_at
"""
INSERT_TOPIC = """
INSERT INTO dataset_topics (topic_name, dataset_id, kind, major, partitions, retention_ms)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (topic_name) DO NOTHING
"""
UPDATE_METADATA = """
UPDATE datasets SET title = $2, description = $3, theme = $4, keywords = $5, licence = $6,
                    update_frequency = $7, spatial_coverage = $8, retention_days = $9,
                    partitions = $10, updated_at = now()
WHERE dataset_id = $1
"""
# The dataset's topics are owed again; desired_at restarts only for rows
# Kafka had confirmed (a row still owed has been owed since before).
UPDATE_WANTED_TOPICS = """
UPDATE dataset_topics
SET partitions = $2, retention_ms = $3, provisioned_at = NULL,
    desired_at = CASE WHEN provisioned_at IS NULL THEN desired_at ELSE now() END
WHERE dataset_id = $1 AND (partitions, retention_ms) IS DISTINCT FROM ($2, $3)
"""
RETIRE_DATASET = """
UPDATE datasets SET status = 'retired', retired_at = now(), updated_at = now()
WHERE dataset_id = $1
"""
SET_CURRENT_SCHEMA = """
UPDATE datasets SET schema_version = $2, schema_major = $3, topic_name = $4, updated_at = now()
WHERE dataset_id = $1
"""
SELECT_SCHEMA_VERSION = """
SELECT v.version, v.major, v.topic_name, v.json_schema, v.created_at
FROM schema_versions v JOIN datasets d ON d.dataset_id = v.dataset_id
WHERE d.slug = $1 AND v.version = $2
"""
SELECT_SCHEMA_VERSIONS = """
SELECT v.version, v.major, v.topic_name, v.json_schema, v.created_at
FROM schema_versions v JOIN datasets d ON d.dataset_id = v.dataset_id
WHERE d.slug = $1 ORDER BY v.version
"""
SELECT_CURRENT_SCHEMA = """
SELECT json_schema FROM schema_versions WHERE dataset_id = $1 AND version = $2
"""

# -- commands -----------------------------------------------------------------


def _normalise_keywords(keywords: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for keyword in keywords:
        cleaned = " ".join(keyword.split()).lower()
        if not cleaned or len(cleaned) > 60:
            raise ValueError(f"keyword {keyword!r} must have 1 to 60 characters")
        seen.setdefault(cleaned, None)
    return list(seen)


class DatasetMetadata(BaseModel):
    """The describable part of a dataset, which its publisher may change."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=3, max_length=300)
    description: str = Field(default="", max_length=20_000)
    theme: Theme
    keywords: list[str] = Field(default_factory=list, max_length=30)
    licence: Licence
    update_frequency: UpdateFrequency | None = None
    spatial_coverage: str | None = Field(
        default=None,
        max_length=300,
        description="A place name (e.g. 'Métropole de Lyon') or a URI of a place.",
    )

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        return _normalise_keywords(value)


_METER_SCHEMA_EXAMPLE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "meter_id": {"type": "string"},
        "kwh": {"type": "number", "minimum": 0},
        "measured_at": {"type": "string", "format": "date-time"},
    },
    "required": ["meter_id", "kwh", "measured_at"],
}


class NewDataset(DatasetMetadata):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "slug": "energy-meters",
                    "title": "Consommation électrique des ménages",
                    "description": "Relevés horaires des compteurs communicants.",
                    "theme": "energy",
                    "keywords": ["compteurs"],
                    "licence": "odbl-1.0",
                    "access_level": "open",
                    "key_field": "meter_id",
                    "update_frequency": "hourly",
                    "spatial_coverage": "Métropole de Lyon",
                    "json_schema": _METER_SCHEMA_EXAMPLE,
                }
            ]
        }
    )

    slug: str = Field(pattern=SLUG_PATTERN, description="Lower-case name used in topic names.")
    access_level: AccessLevel
    publisher_id: str | None = Field(
        default=None, description="The operator registers for an organisation; others omit it."
    )
    key_field: str | None = Field(default=None, pattern=FIELD_PATTERN)
    subject_field: str | None = Field(
        default=None,
        pattern=FIELD_PATTERN,
        description="The data-subject (pseudonymous id) field; required iff personal.",
    )
    retention_days: int = Field(default=30, ge=1, le=MAX_RETENTION_DAYS, strict=True)
    partitions: int = Field(default=3, ge=1, le=MAX_PARTITIONS, strict=True)
    json_schema: dict[str, Any] = Field(description="The first version, JSON Schema 2020-12.")


class DatasetPatch(BaseModel):
    """PATCH body: only the fields given change. The access level, key and
    subject fields are fixed at registration; partitions may only grow."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"description": "Relevés horaires, corrigés.", "retention_days": 14}]
        },
    )

    title: str | None = Field(default=None, min_length=3, max_length=300)
    description: str | None = Field(default=None, max_length=20_000)
    theme: Theme | None = None
    keywords: list[str] | None = Field(default=None, max_length=30)
    licence: Licence | None = None
    update_frequency: UpdateFrequency | None = None
    spatial_coverage: str | None = Field(default=None, max_length=300)
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RETENTION_DAYS,
        strict=True,  # `true` or "7" is a mistake here, not 1 or 7
        description="Days Kafka keeps records on the dataset's topics (their retention.ms). "
        "Shortening it lets Kafka delete older records at its next retention check.",
    )
    partitions: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PARTITIONS,
        strict=True,  # `true` or "7" is a mistake here, not 1 or 7
        description="Partitions of the dataset's topics; may only grow (Kafka cannot remove "
        "partitions). Adding some changes the partition each key maps to: per-key order "
        "holds only among records written after the change.",
    )

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _normalise_keywords(value)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self


class NewSchemaVersion(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "json_schema": {
                        **_METER_SCHEMA_EXAMPLE,
                        "properties": {
                            **_METER_SCHEMA_EXAMPLE["properties"],
                            "tariff": {"type": "string"},
                        },
                    }
                }
            ]
        },
    )

    json_schema: dict[str, Any]
    major: bool = Field(
        default=False,
        strict=True,  # 0 or "yes" is a mistake here, not a decision about topics
        description="Declare a breaking change: a new major version on its own topic.",
    )


# -- views ---------------------------------------------------------------------


class Publisher(BaseModel):
    org_id: str
    name: str


class DatasetStats(BaseModel):
    records_per_minute: float
    accepted_last_hour: int
    rejected_last_hour: int
    rejection_rate: float | None = Field(description="rejected / (accepted + rejected), last hour")
    last_record_at: datetime | None
    updated_at: datetime


class Dataset(BaseModel):
    dataset_id: str
    slug: str
    title: str
    description: str
    publisher: Publisher
    theme: Theme
    keywords: list[str]
    licence: Licence
    access_level: AccessLevel
    key_field: str | None
    subject_field: str | None
    update_frequency: UpdateFrequency | None
    spatial_coverage: str | None
    retention_days: int
    partitions: int
    status: str
    schema_version: int
    schema_major: int
    topic: str
    raw_topic: str
    topics_provisioned: bool = Field(
        description="Kafka confirmed the dataset's topics as described here (they exist, with "
        "these partitions and retention); false while the reconciliation still owes them."
    )
    created_at: datetime
    updated_at: datetime
    retired_at: datetime | None
    stats: DatasetStats | None


class SchemaVersion(BaseModel):
    version: int
    major: int
    topic_name: str
    json_schema: dict[str, Any]
    created_at: datetime


class SchemaVersionResult(SchemaVersion):
    created: bool = Field(description="False when the schema equals the current version.")


class Subscription(BaseModel):
    """How to get at the records of a dataset."""

    kafka_bootstrap_servers: str
    topic: str
    direct_kafka_access: bool = Field(
        description="Open datasets are read straight from Kafka; shared and personal ones "
        "are delivered by notify once an agreement (and consents) allow it."
    )
    consumer_group_hint: str
    record_format: str = (
        "CloudEvents 1.0 binary mode: the value is the record's JSON, attributes in ce_* headers"
    )
    ingest_url: str = Field(description="Where the publisher POSTs records (JSON or NDJSON).")
    raw_topic: str = Field(description="Where a Kafka-native publisher produces records.")
    notify_subscriptions_url: str
    agreements_url: str | None


class DatasetDetail(Dataset):
    json_schema: dict[str, Any]
    subscribe: Subscription


@dataclass(frozen=True)
class Links:
    """Public addresses shown on a dataset's page."""

    kafka_bootstrap_servers: str
    ingest_url: str
    notify_url: str
    consent_url: str


# -- row mapping ---------------------------------------------------------------


def dataset_from_row(row: Any) -> Dataset:
    stats = None
    if row["stats_updated_at"] is not None:
        stats = DatasetStats(
            records_per_minute=row["records_per_minute"],
            accepted_last_hour=row["accepted_last_hour"],
            rejected_last_hour=row["rejected_last_hour"],
            rejection_rate=row["rejection_rate"],
            last_record_at=row["last_record_at"],
            updated_at=row["stats_updated_at"],
        )
    return Dataset(
        dataset_id=row["dataset_id"],
        slug=row["slug"],
        title=row["title"],
        description=row["description"],
        publisher=Publisher(org_id=row["publisher_id"], name=row["publisher_name"]),
        theme=row["theme"],
        keywords=list(row["keywords"]),
        licence=row["licence"],
        access_level=row["access_level"],
        key_field=row["key_field"],
        subject_field=row["subject_field"],
        update_frequency=row["update_frequency"],
        spatial_coverage=row["spatial_coverage"],
        retention_days=row["retention_days"],
        partitions=row["partitions"],
        status=row["status"],
        schema_version=row["schema_version"],
        schema_major=row["schema_major"],
        topic=row["topic_name"],
        raw_topic=raw_topic(row["slug"]),
        topics_provisioned=row["topics_provisioned"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        retired_at=row["retired_at"],
        stats=stats,
    )


def _schema_version(row: Any) -> SchemaVersion:
    return SchemaVersion(
        version=row["version"],
        major=row["major"],
        topic_name=row["topic_name"],
        json_schema=_json(row["json_schema"]),
        created_at=row["created_at"],
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def major_topic(slug: str, major: int) -> str:
    """Major version 1 lives on ``data.<slug>``, version N on ``data.<slug>.v<N>``."""
    return data_topic(slug) if major == 1 else f"{data_topic(slug)}.v{major}"


# -- rules ---------------------------------------------------------------------


def _check_access_rules(command: NewDataset) -> None:
    if command.access_level == "personal" and not command.subject_field:
        raise InvalidInput(
            "a personal dataset needs a subject_field (the data subject's pseudonymous id)",
            code="subject-field-required",
        )
    if command.access_level != "personal" and command.subject_field:
        raise InvalidInput(
            "subject_field is for personal datasets only", code="subject-field-not-personal"
        )
    if command.access_level == "open" and command.licence not in OPEN_LICENCES:
        raise InvalidInput(
            f"an open dataset needs an open licence, not {command.licence!r}",
            code="licence-not-open",
        )


def _publisher_for(caller: Principal, requested: str | None) -> str:
    if caller.is_operator:
        if not requested:
            raise InvalidInput(
                "the operator registers datasets on behalf of an organisation: give publisher_id",
                code="publisher-required",
            )
        return requested
    if requested and requested != caller.org_id:
        raise Forbidden(
            "an organisation publishes datasets under its own name only",
            code="not-your-organisation",
        )
    return caller.org_id


def _require_publisher(caller: Principal, row: Any) -> None:
    caller.require("publish")
    if not caller.is_operator and caller.org_id != row["publisher_id"]:
        raise Forbidden(
            f"only the publisher of {row['slug']!r} or the operator may change it",
            code="not-publisher",
        )


def check_partitions_change(slug: str, current: int, requested: int) -> None:
    if requested < current:
        raise Conflict(
            f"dataset {slug!r} has {current} partitions and cannot go down to {requested}: "
            "Kafka cannot remove partitions from a topic (the records they hold would be "
            f"lost), so their number may only grow. Keep {current} or more.",
            code="partitions-cannot-decrease",
            current_partitions=current,
            requested_partitions=requested,
        )


def _require_active(row: Any) -> None:
    if row["status"] == "retired":
        raise Conflict(f"dataset {row['slug']!r} is retired", code="dataset-retired")


async def _locked_dataset(conn: Connection, slug: str) -> Any:
    row = await conn.fetchrow(SELECT_DATASET_FOR_UPDATE, slug)
    if row is None:
        raise NotFound(f"no dataset {slug!r}", code="dataset-not-found")
    return row


# -- use cases -----------------------------------------------------------------


async def get_dataset(db: Connection | Pool, slug: str) -> Dataset:
    row = await db.fetchrow(SELECT_DATASET, slug)
    if row is None:
        raise NotFound(f"no dataset {slug!r}", code="dataset-not-found")
    return dataset_from_row(row)


async def get_dataset_detail(
    pool: Pool, caller: Principal, slug: str, links: Links
) -> DatasetDetail:
    dataset = await get_dataset(pool, slug)
    current = await get_schema_version(pool, slug, dataset.schema_version)
    open_data = dataset.access_level == "open"
    return DatasetDetail(
        **dataset.model_dump(),
        json_schema=current.json_schema,
        subscribe=Subscription(
            kafka_bootstrap_servers=links.kafka_bootstrap_servers,
            topic=dataset.topic,
            direct_kafka_access=open_data,
            consumer_group_hint=f"{caller.org_id}.{dataset.slug}",
            ingest_url=f"{links.ingest_url.rstrip('/')}/datasets/{slug}/records",
            raw_topic=dataset.raw_topic,
            notify_subscriptions_url=f"{links.notify_url.rstrip('/')}/subscriptions",
            agreements_url=None if open_data else f"{links.consent_url.rstrip('/')}/agreements",
        ),
    )


async def register_dataset(
    pool: Pool, provisioner: Provisioner, caller: Principal, command: NewDataset
) -> Dataset:
    caller.require("publish")
    publisher_id = _publisher_for(caller, command.publisher_id)
    _check_access_rules(command)
    check_dataset_schema(
        command.json_schema, key_field=command.key_field, subject_field=command.subject_field
    )
    dataset_id = str(uuid.uuid4())
    topic = data_topic(command.slug)
    retention_ms = command.retention_days * DAY_MS
    try:
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(ORGANISATION_EXISTS, publisher_id) is None:
                raise NotFound(f"no organisation {publisher_id!r}", code="organisation-not-found")
            await conn.execute(
                INSERT_DATASET,
                dataset_id,
                command.slug,
                command.title,
                command.description,
                publisher_id,
                command.theme,
                command.keywords,
                command.licence,
                command.access_level,
                command.key_field,
                command.subject_field,
                command.update_frequency,
                command.spatial_coverage,
                command.retention_days,
                command.partitions,
                topic,
            )
            await conn.execute(
                INSERT_SCHEMA_VERSION,
                dataset_id,
                1,
                1,
                topic,
                json.dumps(command.json_schema),
                caller.org_id,
            )
            for name, kind, major in ((topic, "data", 1), (raw_topic(command.slug), "raw", None)):
                await conn.execute(
                    INSERT_TOPIC, name, dataset_id, kind, major, command.partitions, retention_ms
                )
            await outbox.enqueue(
                conn,
                DatasetRegistered(
                    dataset_id=dataset_id,
                    slug=command.slug,
                    publisher_id=publisher_id,
                    access_level=command.access_level,
                    key_field_name=command.key_field,
                    subject_field=command.subject_field,
                    topic_name=topic,
                    theme=command.theme,
                ),
            )
            await outbox.enqueue(
                conn,
                SchemaVersionAdded(
                    dataset_id=dataset_id,
                    slug=command.slug,
                    version=1,
                    major=1,
                    topic_name=topic,
                    json_schema=command.json_schema,
                ),
            )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(
            f"the slug {command.slug!r} is taken (slugs of retired datasets stay taken)",
            code="slug-taken",
        ) from exc
    await provisioner.provision_after_commit(dataset_id)
    return await get_dataset(pool, command.slug)


async def update_dataset(
    pool: Pool, provisioner: Provisioner, caller: Principal, slug: str, patch: DatasetPatch
) -> Dataset:
    """Change a dataset's description; a change of its retention or partitions
    is written to its topics' rows and applied to Kafka after the commit (or
    by the reconciliation when Kafka cannot do it now)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked_dataset(conn, slug)
        _require_publisher(caller, row)
        _require_active(row)
        current = {
            "title": row["title"],
            "description": row["description"],
            "theme": row["theme"],
            "keywords": list(row["keywords"]),
            "licence": row["licence"],
            "update_frequency": row["update_frequency"],
            "spatial_coverage": row["spatial_coverage"],
            "retention_days": row["retention_days"],
            "partitions": row["partitions"],
        }
        requested = patch.model_dump(include=patch.model_fields_set)
        for required in (
            "title",
            "theme",
            "licence",
            "keywords",
            "description",
            "retention_days",
            "partitions",
        ):
            if required in requested and requested[required] is None:
                raise InvalidInput(f"{required} cannot be removed", code="field-required")
        changes = {k: v for k, v in requested.items() if current[k] != v}
        if not changes:
            # On this connection: a second one from the pool, taken while this
            # one is held, would exhaust the pool under load.
            return await get_dataset(conn, slug)
        merged = {**current, **changes}
        if row["access_level"] == "open" and merged["licence"] not in OPEN_LICENCES:
            raise InvalidInput(
                f"an open dataset needs an open licence, not {merged['licence']!r}",
                code="licence-not-open",
            )
        check_partitions_change(slug, row["partitions"], merged["partitions"])
        await conn.execute(
            UPDATE_METADATA,
            row["dataset_id"],
            merged["title"],
            merged["description"],
            merged["theme"],
            merged["keywords"],
            merged["licence"],
            merged["update_frequency"],
            merged["spatial_coverage"],
            merged["retention_days"],
            merged["partitions"],
        )
        topics_changed = "retention_days" in changes or "partitions" in changes
        if topics_changed:
            await conn.execute(
                UPDATE_WANTED_TOPICS,
                row["dataset_id"],
                merged["partitions"],
                merged["retention_days"] * DAY_MS,
            )
        await outbox.enqueue(
            conn,
            DatasetUpdated(
                dataset_id=row["dataset_id"],
                slug=slug,
                changes=DatasetChanges.model_validate(changes),
            ),
        )
    if topics_changed:
        await provisioner.provision_after_commit(row["dataset_id"])
    return await get_dataset(pool, slug)


async def retire_dataset(pool: Pool, caller: Principal, slug: str) -> Dataset:
    """Retire: hidden from discovery, refused by ingest; topics and history kept."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked_dataset(conn, slug)
        _require_publisher(caller, row)
        if row["status"] != "retired":
            await conn.execute(RETIRE_DATASET, row["dataset_id"])
            await outbox.enqueue(conn, DatasetRetired(dataset_id=row["dataset_id"], slug=slug))
    return await get_dataset(pool, slug)


async def get_schema_version(db: Connection | Pool, slug: str, version: int) -> SchemaVersion:
    row = await db.fetchrow(SELECT_SCHEMA_VERSION, slug, version)
    if row is None:
        raise NotFound(f"dataset {slug!r} has no schema version {version}", code="schema-not-found")
    return _schema_version(row)


async def list_schema_versions(pool: Pool, slug: str) -> list[SchemaVersion]:
    rows = await pool.fetch(SELECT_SCHEMA_VERSIONS, slug)
    if not rows:
        await get_dataset(pool, slug)  # 404 when the dataset does not exist
    return [_schema_version(r) for r in rows]


async def add_schema_version(
    pool: Pool,
    provisioner: Provisioner,
    caller: Principal,
    slug: str,
    command: NewSchemaVersion,
) -> SchemaVersionResult:
    """Add the next version if it is backward compatible with the current one,
    or as a new major version on a new topic when the caller declares it."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked_dataset(conn, slug)
        _require_publisher(caller, row)
        _require_active(row)
        check_dataset_schema(
            command.json_schema, key_field=row["key_field"], subject_field=row["subject_field"]
        )
        previous = _json(
            await conn.fetchval(SELECT_CURRENT_SCHEMA, row["dataset_id"], row["schema_version"])
        )
        if _canonical(previous) == _canonical(command.json_schema) and not command.major:
            current = await get_schema_version(conn, slug, row["schema_version"])
            return SchemaVersionResult(**current.model_dump(), created=False)
        changes = backward_incompatibilities(
            previous,
            command.json_schema,
            key_field=row["key_field"],
            subject_field=row["subject_field"],
        )
        if changes and not command.major:
            raise Conflict(
                f"version {row['schema_version'] + 1} of {slug!r} would break consumers of "
                f"version {row['schema_version']}: "
                + "; ".join(f"{c.path}: {c.detail}" for c in changes)
                + '. Fix these, or declare "major": true to start a new major version '
                "on a new topic.",
                code="incompatible-schema",
                changes=[c.as_dict() for c in changes],
                current_version=row["schema_version"],
            )
        version = row["schema_version"] + 1
        major = row["schema_major"] + 1 if command.major else row["schema_major"]
        topic = major_topic(slug, major)
        if command.major:
            await conn.execute(
                INSERT_TOPIC,
                topic,
                row["dataset_id"],
                "data",
                major,
                row["partitions"],
                row["retention_days"] * DAY_MS,
            )
        added = await conn.fetchrow(
            INSERT_SCHEMA_VERSION,
            row["dataset_id"],
            version,
            major,
            topic,
            json.dumps(command.json_schema),
            caller.org_id,
        )
        await conn.execute(SET_CURRENT_SCHEMA, row["dataset_id"], version, major, topic)
        await outbox.enqueue(
            conn,
            SchemaVersionAdded(
                dataset_id=row["dataset_id"],
                slug=slug,
                version=version,
                major=major,
                topic_name=topic,
                json_schema=command.json_schema,
            ),
        )
    if command.major:
        await provisioner.provision_after_commit(row["dataset_id"])
    return SchemaVersionResult(**_schema_version(added).model_dump(), created=True)


SELECT_LATEST_SCHEMA_PER_MAJOR = """
SELECT DISTINCT ON (v.dataset_id, v.major)
       v.dataset_id, v.version, v.major, v.topic_name, v.json_schema, v.created_at
FROM schema_versions v JOIN datasets d ON d.dataset_id = v.dataset_id
WHERE d.status = 'active'
ORDER BY v.dataset_id, v.major, v.version DESC
"""


async def latest_schemas_by_major(pool: Pool) -> dict[str, list[SchemaVersion]]:
    """For each active dataset, the newest schema of each major version
    (each major version has its own topic), oldest major first."""
    result: dict[str, list[SchemaVersion]] = {}
    for row in await pool.fetch(SELECT_LATEST_SCHEMA_PER_MAJOR):
        result.setdefault(row["dataset_id"], []).append(_schema_version(row))
    return result
