"""Finding datasets: filters, full-text search, cursor pagination.

Search runs on a generated ``tsvector`` column with a GIN index. Titles and
descriptions are French or English, so the document is indexed with both the
French and the English stemmers, plus the keywords verbatim, all on
accent-folded text; a query is parsed the three ways and matches if any of
them does. "consommations", "electricite" and "consumption" all find
"Consommation électrique". Results are ranked with ``ts_rank_cd`` (title
weighs more than keywords, keywords more than the description).

The cursor is opaque to clients (base64 of the last row's sort key), so pages
stay stable while datasets are added: no offsets.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from datapolis_catalog.datasets import (
    DATASET_COLUMNS,
    DATASET_FROM,
    Dataset,
    dataset_from_row,
    get_dataset,
)
from datapolis_catalog.organisations import PublisherProfile, publisher_profile
from datapolis_catalog.vocabulary import ACCESS_LEVELS, THEMES
from datapolis_shared.errors import InvalidInput, NotFound
from datapolis_shared.postgres.pool import Pool

MAX_LIMIT = 100

SEARCH_QUERY = """(websearch_to_tsquery('pg_catalog.french', catalog_fold($1::text))
 || websearch_to_tsquery('pg_catalog.english', catalog_fold($1::text))
 || websearch_to_tsquery('pg_catalog.simple', catalog_fold($1::text)))"""

# $1 q, $2 theme, $3 access level, $4 publisher, $5 keyword, $6 include retired,
# $7 cursor rank, $8 cursor slug, $9 limit. Every filter is optional (NULL).
LIST_DATASETS = f"""
WITH matched AS (
    SELECT {DATASET_COLUMNS},
           CASE WHEN $1::text IS NULL THEN 0::float8
                ELSE ts_rank_cd(d.search, {SEARCH_QUERY})::float8 END AS rank
    {DATASET_FROM}
    WHERE ($1::text IS NULL OR d.search @@ {SEARCH_QUERY})
      AND ($2::text IS NULL OR d.theme = $2)
      AND ($3::text IS NULL OR d.access_level = $3)
      AND ($4::text IS NULL OR d.publisher_id = $4)
      AND ($5::text IS NULL OR d.keywords @> ARRAY[lower($5::text)])
      AND ($6::bool OR d.status = 'active')
)
SELECT * FROM matched
WHERE $8::text IS NULL OR rank < $7::float8 OR (rank = $7::float8 AND slug > $8::text)
ORDER BY rank DESC, slug
LIMIT $9
"""  # noqa: S608 - composed from constants only; values are bound parameters


@dataclass(frozen=True)
class DatasetQuery:
    q: str | None = None
    theme: str | None = None
    access_level: str | None = None
    publisher: str | None = None
    keyword: str | None = None
    include_retired: bool = False
    cursor: str | None = None
    limit: int = 20


class DatasetPage(BaseModel):
    items: list[Dataset]
    next_cursor: str | None


def encode_cursor(rank: float, slug: str) -> str:
    raw = json.dumps([rank, slug], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        rank, slug = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidInput(
            "this cursor is not one the catalog gave out", code="invalid-cursor"
        ) from exc
    if not isinstance(slug, str) or isinstance(rank, bool) or not isinstance(rank, int | float):
        raise InvalidInput("this cursor is not one the catalog gave out", code="invalid-cursor")
    return float(rank), slug


def _check(query: DatasetQuery) -> None:
    if not 1 <= query.limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", code="invalid-limit")
    if query.theme is not None and query.theme not in THEMES:
        raise InvalidInput(
            f"unknown theme {query.theme!r}; known: {', '.join(THEMES)}", code="unknown-theme"
        )
    if query.access_level is not None and query.access_level not in ACCESS_LEVELS:
        raise InvalidInput(
            f"unknown access level {query.access_level!r}; known: {', '.join(ACCESS_LEVELS)}",
            code="unknown-access-level",
        )
    if query.q is not None and len(query.q) > 500:
        raise InvalidInput("the search text is limited to 500 characters", code="query-too-long")


async def list_datasets(pool: Pool, query: DatasetQuery) -> DatasetPage:
    _check(query)
    q = query.q.strip() if query.q and query.q.strip() else None
    rank, after = decode_cursor(query.cursor) if query.cursor else (None, None)
    rows: list[Any] = await pool.fetch(
        LIST_DATASETS,
        q,
        query.theme,
        query.access_level,
        query.publisher,
        query.keyword,
        query.include_retired,
        rank,
        after,
        query.limit + 1,
    )
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = encode_cursor(page[-1]["rank"], page[-1]["slug"]) if more else None
    return DatasetPage(items=[dataset_from_row(r) for r in page], next_cursor=next_cursor)


async def active_datasets(pool: Pool) -> list[Dataset]:
    """Every active dataset, for the exports."""
    datasets: list[Dataset] = []
    cursor: str | None = None
    while True:
        page = await list_datasets(pool, DatasetQuery(cursor=cursor, limit=MAX_LIMIT))
        datasets.extend(page.items)
        if page.next_cursor is None:
            return datasets
        cursor = page.next_cursor


async def public_dataset(pool: Pool, slug: str) -> tuple[Dataset, PublisherProfile]:
    """One active dataset and its publisher, as the public exports show them.
    A retired dataset is not found: the exports no longer list it."""
    dataset = await get_dataset(pool, slug)
    if dataset.status != "active":
        raise NotFound(f"no dataset {slug!r}", code="dataset-not-found")
    return dataset, await publisher_profile(pool, dataset.publisher.org_id)
