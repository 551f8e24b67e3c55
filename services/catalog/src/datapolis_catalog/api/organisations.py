"""Organisations and their API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from datapolis_catalog import organisations
from datapolis_catalog.api import problems as p
from datapolis_catalog.api.deps import CatalogDep
from datapolis_catalog.organisations import (
    ApiKey,
    IssuedApiKey,
    NewApiKey,
    NewOrganisation,
    Organisation,
)
from datapolis_shared.http.app import Caller
from datapolis_shared.http.openapi import MISSING_SCOPE, OPERATOR_ONLY, problem_responses
from datapolis_shared.http.strict_json import StrictJsonRoute

OrgId = Annotated[
    str,
    Path(description="the organisation's id", examples=["3b8d128e-5f9a-4a9b-b4eb-22608d775a48"]),
]
KeyId = Annotated[str, Path(description="the key's id", examples=["c858487ea318b7c2"])]

KEY_ADMIN = (p.ORGANISATION_NOT_FOUND, p.NOT_YOUR_ORGANISATION, MISSING_SCOPE)

router = APIRouter(prefix="/organisations", tags=["organisations"], route_class=StrictJsonRoute)


@router.post(
    "",
    status_code=201,
    response_model=Organisation,
    summary="Register an organisation (operator only)",
    responses=problem_responses(OPERATOR_ONLY, p.ORGANISATION_EXISTS),
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


@router.get(
    "/{org_id}",
    response_model=Organisation,
    summary="One organisation",
    responses=problem_responses(p.ORGANISATION_NOT_FOUND),
)
async def get_organisation(org_id: OrgId, caller: Caller, catalog: CatalogDep) -> Organisation:
    return await organisations.get_organisation(catalog.pool, caller, org_id)


@router.post(
    "/{org_id}/keys",
    status_code=201,
    response_model=IssuedApiKey,
    tags=["api keys"],
    summary="Issue an API key (the token is shown once)",
    description="The operator, or a key of this organisation with the `admin` scope. A key "
    "never grants scopes it lacks itself.",
    responses=problem_responses(*KEY_ADMIN, p.UNKNOWN_SCOPE, p.SCOPE_ESCALATION),
)
async def issue_key(
    org_id: OrgId, body: NewApiKey, caller: Caller, catalog: CatalogDep
) -> IssuedApiKey:
    return await organisations.issue_key(catalog.pool, caller, org_id, body)


@router.get(
    "/{org_id}/keys",
    response_model=list[ApiKey],
    tags=["api keys"],
    summary="List an organisation's keys (never their secrets)",
    responses=problem_responses(*KEY_ADMIN),
)
async def list_keys(org_id: OrgId, caller: Caller, catalog: CatalogDep) -> list[ApiKey]:
    return await organisations.list_keys(catalog.pool, caller, org_id)


@router.delete(
    "/{org_id}/keys/{key_id}",
    response_model=ApiKey,
    tags=["api keys"],
    summary="Revoke a key, here at once and in every service within seconds",
    responses=problem_responses(*KEY_ADMIN, p.API_KEY_NOT_FOUND),
)
async def revoke_key(org_id: OrgId, key_id: KeyId, caller: Caller, catalog: CatalogDep) -> ApiKey:
    return await organisations.revoke(catalog.pool, caller, org_id, key_id)
