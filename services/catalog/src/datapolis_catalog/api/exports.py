"""DCAT-AP and AsyncAPI exports. Public: harvesters carry no API key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from datapolis_catalog import datasets, discovery
from datapolis_catalog.api.deps import BaseUrl, CatalogDep
from datapolis_catalog.exports.asyncapi import build_asyncapi
from datapolis_catalog.exports.dcat import build_catalog
from datapolis_shared.http.strict_json import StrictJsonRoute

router = APIRouter(tags=["exports"], route_class=StrictJsonRoute)


@router.get(
    "/catalog.jsonld",
    summary="The catalog as DCAT-AP 3 (JSON-LD)",
    response_class=JSONResponse,
    responses={200: {"content": {"application/ld+json": {}}}},
)
async def dcat_catalog(catalog: CatalogDep, base: BaseUrl) -> JSONResponse:
    active = await discovery.active_datasets(catalog.pool)
    document: dict[str, Any] = build_catalog(
        active,
        base_url=base,
        title=catalog.settings.catalog_title,
        publisher_name=catalog.settings.catalog_publisher_name,
    )
    return JSONResponse(document, media_type="application/ld+json")


@router.get(
    "/asyncapi.json",
    summary="Every dataset topic as an AsyncAPI 3.0 document",
    response_class=JSONResponse,
)
async def asyncapi_document(catalog: CatalogDep, base: BaseUrl) -> JSONResponse:
    active = await discovery.active_datasets(catalog.pool)
    schemas = await datasets.latest_schemas_by_major(catalog.pool)
    settings = catalog.settings
    document = build_asyncapi(
        active,
        schemas,
        kafka=settings.kafka,
        bootstrap=catalog.links.kafka_bootstrap_servers,
        title=settings.catalog_title,
        base_url=base,
    )
    return JSONResponse(document)
