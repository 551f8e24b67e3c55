"""What consent knows of a dataset, and the answers it gives about one.

Catalog is the authority on datasets; consent keeps the part it needs in its
``datasets`` table (see :mod:`datapolis_consent.projection`): the publisher,
the access level, the key and subject fields, and the fields of the current
schema version. This module reads that table for the agreements and consents
code and raises the domain errors their API maps to problems:

- ``dataset-not-found``: consent knows no dataset by that id or slug;
- ``dataset-is-open``: open datasets need no agreement (nor consent);
- ``dataset-retired``: a retired dataset takes no new agreement;
- ``unknown-fields``: fields asked for that the current schema does not have
  (``fields`` lists them).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from datapolis_shared.errors import Conflict, InvalidInput, NotFound
from datapolis_shared.events.catalog import AccessLevel
from datapolis_shared.postgres.pool import Connection


class Dataset(BaseModel):
    """One dataset as consent knows it. ``fields`` are the top-level names
    of the current schema version; ``field_paths`` add the nested ones
    (``address.city``). Both are empty while no schema version is known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset_id: str
    slug: str
    publisher_id: str
    access_level: AccessLevel
    key_field: str | None
    subject_field: str | None
    schema_version: int | None
    fields: tuple[str, ...]
    field_paths: tuple[str, ...]
    retired_at: datetime | None

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    @property
    def needs_agreement(self) -> bool:
        """Shared and personal data flow only under an agreement."""
        return self.access_level != "open"

    @property
    def personal(self) -> bool:
        """Records name a data subject, whose consent is needed as well."""
        return self.access_level == "personal"


class DatasetNotFound(NotFound):
    code = "dataset-not-found"


class DatasetIsOpen(Conflict):
    code = "dataset-is-open"


class DatasetIsRetired(Conflict):
    code = "dataset-retired"


class UnknownFields(InvalidInput):
    """``fields``: the names asked for that the schema lacks, as asked."""

    code = "unknown-fields"

    def __init__(self, message: str, *, fields: list[str], **extra: Any) -> None:
        super().__init__(message, fields=fields, **extra)
        self.fields = fields


_SELECT = """
SELECT dataset_id, slug, publisher_id, access_level, key_field, subject_field,
       schema_version, fields, field_paths, retired_at
FROM datasets
"""
SELECT_BY_ID = _SELECT + "WHERE dataset_id = $1"
# A slug names its live dataset; once every holder is retired, the latest one
# (so an old reference to it learns it is retired rather than not found).
SELECT_BY_SLUG = (
    _SELECT
    + """
WHERE slug = $1
ORDER BY retired_at IS NULL DESC, registered_at DESC, dataset_id
LIMIT 1
"""
)


async def get_dataset(conn: Connection, dataset_id_or_slug: str) -> Dataset:
    """The dataset with this id, or else this slug; ``DatasetNotFound`` if none."""
    row = None
    # No dataset is named with what PostgreSQL text cannot hold (NUL, a lone
    # surrogate); the driver, asked, would fail rather than find nothing.
    if _storable(dataset_id_or_slug):
        row = await conn.fetchrow(SELECT_BY_ID, dataset_id_or_slug)
        if row is None:
            row = await conn.fetchrow(SELECT_BY_SLUG, dataset_id_or_slug)
    if row is None:
        raise DatasetNotFound(f"no dataset {dataset_id_or_slug!r}", dataset=dataset_id_or_slug)
    return dataset_from_row(row)


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def dataset_from_row(row: Any) -> Dataset:
    return Dataset(
        dataset_id=row["dataset_id"],
        slug=row["slug"],
        publisher_id=row["publisher_id"],
        access_level=row["access_level"],
        key_field=row["key_field"],
        subject_field=row["subject_field"],
        schema_version=row["schema_version"],
        fields=tuple(row["fields"]),
        field_paths=tuple(row["field_paths"]),
        retired_at=row["retired_at"],
    )


def fields_of(dataset: Dataset) -> tuple[str, ...]:
    """The top-level fields of the dataset's current schema, in its order."""
    return dataset.fields


def require_agreement_possible(dataset: Dataset) -> Dataset:
    """``dataset`` if an agreement may be made on it now; otherwise why not."""
    if not dataset.needs_agreement:
        raise DatasetIsOpen(
            f"dataset {dataset.slug!r} is open: anyone with an API key may read it, "
            "open datasets need no agreement",
            dataset=dataset.slug,
        )
    if dataset.retired:
        raise DatasetIsRetired(
            f"dataset {dataset.slug!r} is retired and takes no new agreement",
            dataset=dataset.slug,
        )
    return dataset


def check_fields(dataset: Dataset, requested: Iterable[str]) -> tuple[str, ...]:
    """``requested`` (each once, in order) if the current schema has every
    one of them, top-level or nested path; ``UnknownFields`` otherwise."""
    wanted = tuple(dict.fromkeys(requested))
    known = frozenset(dataset.field_paths)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        version = (
            f"version {dataset.schema_version} of its schema"
            if dataset.schema_version is not None
            else "its schema (consent knows no version of it yet)"
        )
        raise UnknownFields(
            f"dataset {dataset.slug!r} has no field {', '.join(map(repr, unknown))} in {version}",
            fields=unknown,
            dataset=dataset.slug,
            schema_version=dataset.schema_version,
        )
    return wanted
