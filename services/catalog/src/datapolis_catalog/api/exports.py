"""DCAT-AP and AsyncAPI exports, and each dataset's public page. Public:
harvesters and people following a landing page carry no API key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import HTMLResponse, JSONResponse

from datapolis_catalog import datasets, discovery, organisations
from datapolis_catalog.api.deps import BaseUrl, CatalogDep, Slug
from datapolis_catalog.api.problems import DATASET_NOT_FOUND
from datapolis_catalog.exports.asyncapi import build_asyncapi
from datapolis_catalog.exports.dcat import build_catalog, build_dataset_document
from datapolis_catalog.exports.landing import render_landing_page
from datapolis_shared.http.openapi import problem_responses
from datapolis_shared.http.strict_json import StrictJsonRoute

router = APIRouter(tags=["exports"], route_class=StrictJsonRoute)

JSON_LD = "application/ld+json"


def _quality(accept: str, media_type: str) -> float:
    """The q an Accept header gives ``media_type`` (exact, type/*, or */*)."""
    kind = media_type.split("/")[0]
    best, specificity = 0.0, -1
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        rank = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(name.lower())
        if rank is None or rank < specificity:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best, specificity = q, rank
    return best


def wants_html(accept: str | None) -> bool:
    """HTML for browsers; JSON-LD for anything that does not prefer HTML."""
    if not accept:
        return False
    html = _quality(accept, "text/html")
    data = max(_quality(accept, JSON_LD), _quality(accept, "application/json"))
    return html > data


@router.get(
    "/catalog.jsonld",
    summary="The catalog as DCAT-AP 3 (JSON-LD)",
    response_class=JSONResponse,
    responses={200: {"content": {JSON_LD: {}}}},
)
async def dcat_catalog(catalog: CatalogDep, base: BaseUrl) -> JSONResponse:
    active = await discovery.active_datasets(catalog.pool)
    publishers = await organisations.publisher_profiles(catalog.pool)
    settings = catalog.settings
    document: dict[str, Any] = build_catalog(
        active,
        publishers,
        base_url=base,
        title=settings.catalog_title,
        publisher_name=settings.catalog_publisher_name,
        publisher_kind=settings.catalog_publisher_kind,
        contact_email=settings.catalog_contact_email,
    )
    return JSONResponse(document, media_type=JSON_LD)


@router.get(
    "/catalog/datasets/{slug}",
    summary="A dataset's public page: the landing page and access URL of the DCAT-AP export",
    description="No API key needed. An HTML page for a browser (`Accept: text/html`), else the "
    "dataset's DCAT-AP node as JSON-LD: what `/catalog.jsonld` says of the dataset, and how to "
    "reach its records. Retired datasets are not found, as the export no longer lists them.",
    response_class=Response,
    responses={
        200: {"content": {JSON_LD: {}, "text/html": {}}},
        **problem_responses(DATASET_NOT_FOUND),
    },
)
async def dataset_page(
    slug: Slug,
    catalog: CatalogDep,
    base: BaseUrl,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    dataset, publisher = await discovery.public_dataset(catalog.pool, slug)
    headers = {"Vary": "Accept"}
    if wants_html(accept):
        page = render_landing_page(dataset, publisher, base_url=base, links=catalog.links)
        return HTMLResponse(page, headers=headers)
    document = build_dataset_document(dataset, publisher, base_url=base)
    return JSONResponse(document, media_type=JSON_LD, headers=headers)


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
