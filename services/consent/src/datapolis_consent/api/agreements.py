"""Sharing agreements: request, decide, amend, end, read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from datapolis_consent import agreements
from datapolis_consent.agreements import (
    Agreement,
    AgreementRequest,
    Change,
    Reason,
    Termination,
    Terms,
)
from datapolis_consent.api import problems as p
from datapolis_consent.changes import DELIVERIES_STOP_WITHIN_S
from datapolis_consent.keys import KeyRing
from datapolis_consent.settings import ConsentSettings
from datapolis_shared.http.app import Caller, RuntimeDep
from datapolis_shared.http.openapi import MISSING_SCOPE, problem_responses
from datapolis_shared.http.strict_json import StrictJsonRoute
from datapolis_shared.postgres.pool import Pool

AgreementId = Annotated[
    str,
    Path(
        description="the agreement's id",
        examples=["0f8e7a52-3c4b-4c9e-9d51-1d2f3a4b5c6d"],
        max_length=200,
    ),
]

router = APIRouter(prefix="/agreements", tags=["agreements"], route_class=StrictJsonRoute)


class AgreementOutcome(BaseModel):
    """The agreement after the change; for a grant, an amendment or a
    revocation, its signed receipt (a compact JWS, see /.well-known/jwks.json);
    for a revocation or a termination, the bound within which deliveries stop
    (the change's event is already acknowledged by Kafka)."""

    model_config = ConfigDict(frozen=True)

    agreement: Agreement
    receipt: str | None = None
    deliveries_stop_within_s: float | None = Field(default=None, examples=[1.0])


async def get_pool(runtime: RuntimeDep) -> Pool:
    return runtime.pool


PoolDep = Annotated[Pool, Depends(get_pool)]


def _outcome(request: Request, change: Change, *, ended: bool = False) -> AgreementOutcome:
    settings: ConsentSettings = request.app.state.settings
    keys: KeyRing = request.app.state.receipt_keys
    base_url = (settings.http.public_url or str(request.base_url)).rstrip("/")
    receipt = agreements.receipt_for(change, keys=keys, issuer=base_url, base_url=base_url)
    return AgreementOutcome(
        agreement=change.agreement,
        receipt=receipt,
        deliveries_stop_within_s=DELIVERIES_STOP_WITHIN_S if ended else None,
    )


async def _published(request: Request, pool: Pool, change: Change) -> None:
    settings: ConsentSettings = request.app.state.settings
    await agreements.wait_published(pool, change, timeout_s=settings.publish_wait_s)


@router.post(
    "",
    status_code=201,
    response_model=Agreement,
    summary="Request access to a shared or personal dataset (the consumer)",
    responses=problem_responses(
        MISSING_SCOPE,
        p.DATASET_NOT_FOUND,
        p.DATASET_IS_OPEN,
        p.DATASET_RETIRED,
        p.UNKNOWN_FIELDS,
        p.UNKNOWN_PURPOSES,
        p.INVALID_PERIOD,
        p.OWN_DATASET,
    ),
)
async def request_agreement(
    body: AgreementRequest, caller: Caller, pool: PoolDep, response: Response
) -> Agreement:
    change = await agreements.request_agreement(pool, caller, body)
    response.headers["Location"] = f"/agreements/{change.agreement.agreement_id}"
    return change.agreement


@router.get(
    "",
    response_model=list[Agreement],
    summary="The caller's agreements, as consumer or publisher (the operator: all)",
    responses=problem_responses(MISSING_SCOPE),
)
async def list_agreements(caller: Caller, pool: PoolDep) -> list[Agreement]:
    return await agreements.list_agreements(pool, caller)


@router.get(
    "/{agreement_id}",
    response_model=Agreement,
    summary="One agreement (its parties and the operator only)",
    responses=problem_responses(MISSING_SCOPE, p.AGREEMENT_NOT_FOUND),
)
async def get_agreement(agreement_id: AgreementId, caller: Caller, pool: PoolDep) -> Agreement:
    return await agreements.get_agreement(pool, caller, agreement_id)


_DECISION = (MISSING_SCOPE, p.AGREEMENT_NOT_FOUND, p.NOT_THE_PUBLISHER)


@router.post(
    "/{agreement_id}/grant",
    response_model=AgreementOutcome,
    summary="Grant a request, narrowing its fields or period if wished (the publisher)",
    responses=problem_responses(
        *_DECISION,
        p.AGREEMENT_NOT_PENDING,
        p.DATASET_RETIRED,
        p.FIELDS_NOT_REQUESTED,
        p.INVALID_PERIOD,
    ),
)
async def grant(
    agreement_id: AgreementId,
    caller: Caller,
    pool: PoolDep,
    request: Request,
    body: Terms | None = None,
) -> AgreementOutcome:
    # No body: granted as requested.
    return _outcome(request, await agreements.grant(pool, caller, agreement_id, body or Terms()))


@router.post(
    "/{agreement_id}/refuse",
    response_model=AgreementOutcome,
    summary="Refuse a request, with a reason (the publisher)",
    responses=problem_responses(*_DECISION, p.AGREEMENT_NOT_PENDING),
)
async def refuse(
    agreement_id: AgreementId, body: Reason, caller: Caller, pool: PoolDep, request: Request
) -> AgreementOutcome:
    return _outcome(request, await agreements.refuse(pool, caller, agreement_id, body))


@router.post(
    "/{agreement_id}/amend",
    response_model=AgreementOutcome,
    summary="Amend a granted agreement's fields or period (the publisher)",
    responses=problem_responses(
        *_DECISION,
        p.AGREEMENT_NOT_ACTIVE,
        p.FIELDS_NOT_REQUESTED,
        p.INVALID_PERIOD,
        p.NOTHING_TO_AMEND,
    ),
)
async def amend(
    agreement_id: AgreementId, body: Terms, caller: Caller, pool: PoolDep, request: Request
) -> AgreementOutcome:
    return _outcome(request, await agreements.amend(pool, caller, agreement_id, body))


@router.post(
    "/{agreement_id}/revoke",
    response_model=AgreementOutcome,
    summary="Revoke a granted agreement, with a reason (the publisher)",
    description="Answers once the revocation is committed and its event acknowledged by "
    "Kafka. If Kafka does not acknowledge it in time, 503 `event-not-acknowledged`: the "
    "revocation stays committed and is published once Kafka answers.",
    responses=problem_responses(*_DECISION, p.AGREEMENT_NOT_ACTIVE, p.EVENT_NOT_ACKNOWLEDGED),
)
async def revoke(
    agreement_id: AgreementId, body: Reason, caller: Caller, pool: PoolDep, request: Request
) -> AgreementOutcome:
    change = await agreements.revoke(pool, caller, agreement_id, body)
    await _published(request, pool, change)
    return _outcome(request, change, ended=True)


@router.post(
    "/{agreement_id}/terminate",
    response_model=AgreementOutcome,
    summary="Terminate a granted agreement (the consumer)",
    description="Answers once the termination is committed and its event acknowledged by "
    "Kafka; otherwise 503 `event-not-acknowledged`, as for a revocation.",
    responses=problem_responses(
        MISSING_SCOPE,
        p.AGREEMENT_NOT_FOUND,
        p.NOT_THE_CONSUMER,
        p.AGREEMENT_NOT_ACTIVE,
        p.EVENT_NOT_ACKNOWLEDGED,
    ),
)
async def terminate(
    agreement_id: AgreementId,
    caller: Caller,
    pool: PoolDep,
    request: Request,
    body: Termination | None = None,
) -> AgreementOutcome:
    change = await agreements.terminate(pool, caller, agreement_id, body or Termination())
    await _published(request, pool, change)
    return _outcome(request, change, ended=True)
