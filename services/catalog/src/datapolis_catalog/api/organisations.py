"""Organisations and their API keys."""

from __future__ import annotations

from fastapi import APIRouter, Response

from datapolis_catalog import organisations
from datapolis_catalog.api.deps import CatalogDep
from datapolis_catalog.organisations import (
    ApiKey,
    IssuedApiKey,
    NewApiKey,
    NewOrganisation,
    Organisation,
)
from datapolis_shared.http.app import Caller
from datapolis_shared.http.strict_json import StrictJsonRoute

router = APIRouter(prefix="/organisations", tags=["organisations"], route_class=StrictJsonRoute)


@router.post(
    "",
    status_code=201,
    response_model=Organisation,
    summary="Register an organisation (operator only)",
)
async def register_organisation(
    body: NewOrganisation, caller: Caller, catalog: CatalogDep, response: Response
) -> Organisation:
    organisation = await organisations.register_organisation(catalog.pool, caller, body)
    response.headers["Location"] = f"/organisations/{organisation.org_id}"
    return organisation


@router.get("", response_model=list[Organisation], summary="List organisations")
async def list_organisations(caller: Caller, catalog: CatalogDep) -> list[Organisation]:
    return await organisations.list_organisations(catalog.pool, caller)


@router.get("/{org_id}", response_model=Organisation, summary="One organisation")
async def get_organisation(org_id: str, caller: Caller, catalog: CatalogDep) -> Organisation:
    return await organisations.get_organisation(catalog.pool, caller, org_id)


@router.post(
    "/{org_id}/keys",
    status_code=201,
    response_model=IssuedApiKey,
    tags=["api keys"],
    summary="Issue an API key (the token is shown once)",
    description="The operator, or a key of this organisation with the `admin` scope. A key "
    "never grants scopes it lacks itself.",
)
async def issue_key(
    org_id: str, body: NewApiKey, caller: Caller, catalog: CatalogDep
) -> IssuedApiKey:
    return await organisations.issue_key(catalog.pool, caller, org_id, body)


@router.get(
    "/{org_id}/keys",
    response_model=list[ApiKey],
    tags=["api keys"],
    summary="List an organisation's keys (never their secrets)",
)
async def list_keys(org_id: str, caller: Caller, catalog: CatalogDep) -> list[ApiKey]:
    return await organisations.list_keys(catalog.pool, caller, org_id)


@router.delete(
    "/{org_id}/keys/{key_id}",
    response_model=ApiKey,
    tags=["api keys"],
    summary="Revoke a key, here at once and in every service within seconds",
)
async def revoke_key(org_id: str, key_id: str, caller: Caller, catalog: CatalogDep) -> ApiKey:
    return await organisations.revoke(catalog.pool, caller, org_id, key_id)
