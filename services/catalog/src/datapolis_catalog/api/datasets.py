"""Datasets, their schema versions, and discovery."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from datapolis_catalog import datasets, discovery
from datapolis_catalog.api import problems as p
from datapolis_catalog.api.deps import CatalogDep, Slug
from datapolis_catalog.datasets import (
    Dataset,
    DatasetDetail,
    DatasetPatch,
    NewDataset,
    NewSchemaVersion,
    SchemaVersion,
    SchemaVersionResult,
)
from datapolis_catalog.discovery import DatasetQuery
from datapolis_shared.http.app import Caller
from datapolis_shared.http.openapi import MISSING_SCOPE, problem_responses
from datapolis_shared.http.strict_json import StrictJsonRoute

PUBLISHER_ONLY = (MISSING_SCOPE, p.NOT_PUBLISHER, p.DATASET_NOT_FOUND)

router = APIRouter(prefix="/datasets", route_class=StrictJsonRoute)


class DatasetListing(BaseModel):
    items: list[Dataset]
    next_cursor: str | None
    next: str | None


@router.post(
    "",
    status_code=201,
    response_model=Dataset,
    tags=["datasets"],
    summary="Register a dataset with its first schema; provisions its topics",
    description="Needs the `publish` scope. The dataset, schema version 1 and the "
    "DatasetRegistered and SchemaVersionAdded events commit together; the `data.<slug>` and "
    "`raw.<slug>` topics are created right after (or by the reconciliation if Kafka is down: "
    "`topics_provisioned` says which).",
    responses=problem_responses(
        MISSING_SCOPE,
        p.NOT_YOUR_ORGANISATION,
        p.ORGANISATION_NOT_FOUND,
        p.SLUG_TAKEN,
        p.PUBLISHER_REQUIRED,
        p.SUBJECT_FIELD_REQUIRED,
        p.SUBJECT_FIELD_NOT_PERSONAL,
        p.LICENCE_NOT_OPEN,
        *p.SCHEMA_CODES,
    ),
)
async def register_dataset(
    body: NewDataset, caller: Caller, catalog: CatalogDep, response: Response
) -> Dataset:
    dataset = await datasets.register_dataset(catalog.pool, catalog.provisioner, caller, body)
    response.headers["Location"] = f"/datasets/{dataset.slug}"
    return dataset


@router.get(
    "",
    response_model=DatasetListing,
    tags=["discovery"],
    summary="Find datasets: filters, full-text search, cursor pagination",
    responses=problem_responses(
        p.INVALID_CURSOR, p.INVALID_LIMIT, p.UNKNOWN_THEME, p.UNKNOWN_ACCESS_LEVEL, p.QUERY_TOO_LONG
    ),
)
async def list_datasets(
    request: Request,
    caller: Caller,
    catalog: CatalogDep,
    q: Annotated[str | None, Query(description="Full-text search (French or English)")] = None,
    theme: str | None = None,
    access_level: str | None = None,
    publisher: Annotated[str | None, Query(description="Publisher organisation id")] = None,
    keyword: str | None = None,
    include_retired: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(description="1 to 100")] = 20,
) -> DatasetListing:
    query = DatasetQuery(
        q=q,
        theme=theme,
        access_level=access_level,
        publisher=publisher,
        keyword=keyword,
        include_retired=include_retired,
        cursor=cursor,
        limit=limit,
    )
    page = await discovery.list_datasets(catalog.pool, query)
    next_link = None
    if page.next_cursor:
        params: dict[str, Any] = {k: v for k, v in request.query_params.items() if k != "cursor"}
        params["cursor"] = page.next_cursor
        next_link = f"{request.url.path}?{urlencode(params)}"
    return DatasetListing(items=page.items, next_cursor=page.next_cursor, next=next_link)


@router.get(
    "/{slug}",
    response_model=DatasetDetail,
    tags=["discovery"],
    summary="A dataset: metadata, current schema, topic, how to subscribe, live stats",
    description="Any API key reads the metadata of every dataset, personal ones included: "
    "metadata is not data, and a consumer must find a dataset to ask for an agreement. "
    "The records of shared and personal datasets stay behind agreements and consents.",
    responses=problem_responses(p.DATASET_NOT_FOUND),
)
async def get_dataset(slug: Slug, caller: Caller, catalog: CatalogDep) -> DatasetDetail:
    return await datasets.get_dataset_detail(catalog.pool, caller, slug, catalog.links)


@router.patch(
    "/{slug}",
    response_model=Dataset,
    tags=["datasets"],
    summary="Change a dataset's description, retention or partitions (publisher or operator)",
    description="Only the fields given change; a DatasetUpdated event lists them. A new "
    "`retention_days` or `partitions` is applied to every topic of the dataset (`data.<slug>`, "
    "`raw.<slug>`, `data.<slug>.v<N>`) right after the commit, or by the reconciliation if "
    "Kafka cannot do it now: `topics_provisioned` says which. Partitions may only grow, and "
    "adding some changes the partition each key maps to.",
    responses=problem_responses(
        *PUBLISHER_ONLY,
        p.DATASET_RETIRED,
        p.PARTITIONS_CANNOT_DECREASE,
        p.FIELD_REQUIRED,
        p.LICENCE_NOT_OPEN,
    ),
)
async def update_dataset(
    slug: Slug, body: DatasetPatch, caller: Caller, catalog: CatalogDep
) -> Dataset:
    return await datasets.update_dataset(catalog.pool, catalog.provisioner, caller, slug, body)


@router.delete(
    "/{slug}",
    response_model=Dataset,
    tags=["datasets"],
    summary="Retire a dataset (hidden from discovery; topics and history kept)",
    responses=problem_responses(*PUBLISHER_ONLY),
)
async def retire_dataset(slug: Slug, caller: Caller, catalog: CatalogDep) -> Dataset:
    return await datasets.retire_dataset(catalog.pool, caller, slug)


@router.post(
    "/{slug}/schemas",
    status_code=201,
    response_model=SchemaVersionResult,
    tags=["schemas"],
    summary="Add a schema version (compatible, or declared major on a new topic)",
    responses={
        200: {"model": SchemaVersionResult, "description": "The same schema is already there"},
        **problem_responses(
            *PUBLISHER_ONLY, p.DATASET_RETIRED, p.INCOMPATIBLE_SCHEMA, *p.SCHEMA_CODES
        ),
    },
)
async def add_schema_version(
    slug: Slug, body: NewSchemaVersion, caller: Caller, catalog: CatalogDep, response: Response
) -> SchemaVersionResult:
    result = await datasets.add_schema_version(
        catalog.pool, catalog.provisioner, caller, slug, body
    )
    if not result.created:
        response.status_code = 200
    response.headers["Location"] = f"/datasets/{slug}/schemas/{result.version}"
    return result


@router.get(
    "/{slug}/schemas",
    response_model=list[SchemaVersion],
    tags=["schemas"],
    summary="Every schema version of a dataset",
    responses=problem_responses(p.DATASET_NOT_FOUND),
)
async def list_schema_versions(
    slug: Slug, caller: Caller, catalog: CatalogDep
) -> list[SchemaVersion]:
    return await datasets.list_schema_versions(catalog.pool, slug)


@router.get(
    "/{slug}/schemas/{version}",
    tags=["schemas"],
    summary="One schema version as a JSON Schema document (public: the ce_dataschema URL)",
    response_class=JSONResponse,
    responses={
        200: {"content": {"application/schema+json": {"schema": {"type": "object"}}}},
        **problem_responses(p.SCHEMA_NOT_FOUND),
    },
)
async def get_schema_document(
    slug: Slug, version: Annotated[int, Path(ge=1, le=2**31 - 1, examples=[1])], catalog: CatalogDep
) -> JSONResponse:
    schema = await datasets.get_schema_version(catalog.pool, slug, version)
    return JSONResponse(schema.json_schema, media_type="application/schema+json")
