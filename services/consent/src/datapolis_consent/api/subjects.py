"""Data subjects: their consents, history and export, by subject token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from datapolis_consent import subjects
from datapolis_consent.api import problems as p
from datapolis_consent.api.agreements import PoolDep
from datapolis_consent.changes import DELIVERIES_STOP_WITHIN_S
from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger.verify import EntityNotInLedger, verify_entity
from datapolis_consent.ledger_api import NOT_IN_LEDGER, CheckpointTokens, VerificationOut, signer_of
from datapolis_consent.settings import ConsentSettings
from datapolis_consent.subject_tokens import (
    InvalidSubjectToken,
    SubjectClaims,
    SubjectTokenVerifier,
)
from datapolis_consent.subjects import (
    Change,
    ConsentRequest,
    HistoryEntry,
    SubjectConsent,
    SubjectExport,
)
from datapolis_shared.errors import NotFound
from datapolis_shared.http.openapi import ProblemCode, own_security, problem_responses
from datapolis_shared.http.strict_json import StrictJsonRoute

SUBJECT_SCHEME_NAME = "subjectToken"
_SECURITY = own_security(
    SUBJECT_SCHEME_NAME,
    {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A subject token: a JWT signed by an issuer the platform trusts "
        "(CONSENT_SUBJECT_TOKEN_ISSUERS), naming the pseudonymous subject (`sub`), the "
        "dataset (`dataset`), the platform's audience (`aud`) and an expiry (`exp`).",
    },
)
_TOKEN_CODES: tuple[ProblemCode, ...] = (
    p.INVALID_SUBJECT_TOKEN,
    p.EXPIRED_SUBJECT_TOKEN,
    p.UNKNOWN_TOKEN_ISSUER,
    p.SUBJECT_DATASET_NOT_FOUND,
)

ConsentId = Annotated[
    str,
    Path(
        description="the consent's id",
        examples=["5b1e6c1a-2f0d-4b8e-9a57-0c3d2e1f4a6b"],
        max_length=200,
    ),
]

router = APIRouter(prefix="/subjects/me", tags=["subjects"], route_class=StrictJsonRoute)


async def subject(request: Request) -> SubjectClaims:
    """The subject the request's bearer subject token names."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidSubjectToken("send a subject token: `Authorization: Bearer <JWT>`")
    verifier: SubjectTokenVerifier = request.app.state.subject_tokens
    return await verifier.verify(token.strip())


Subject = Annotated[SubjectClaims, Depends(subject)]


class ConsentOutcome(BaseModel):
    """The consent after the change and its signed receipt (a compact JWS, see
    /.well-known/jwks.json); for a withdrawal, the bound within which
    deliveries stop (its event is already acknowledged by Kafka)."""

    model_config = ConfigDict(frozen=True)

    consent: SubjectConsent
    receipt: str | None = None
    deliveries_stop_within_s: float | None = Field(default=None, examples=[1.0])


def _outcome(request: Request, change: Change, *, ended: bool = False) -> ConsentOutcome:
    settings: ConsentSettings = request.app.state.settings
    keys: KeyRing = request.app.state.receipt_keys
    base_url = (settings.http.public_url or str(request.base_url)).rstrip("/")
    return ConsentOutcome(
        consent=change.consent,
        receipt=subjects.receipt_for(change, keys=keys, issuer=base_url, base_url=base_url),
        deliveries_stop_within_s=DELIVERIES_STOP_WITHIN_S if ended else None,
    )


@router.get(
    "/consents",
    response_model=list[SubjectConsent],
    summary="The subject's consents on the token's dataset",
    responses=problem_responses(*_TOKEN_CODES),
    openapi_extra=_SECURITY,
)
async def list_consents(claims: Subject, pool: PoolDep) -> list[SubjectConsent]:
    return await subjects.list_consents(pool, claims)


@router.post(
    "/consents",
    status_code=201,
    response_model=ConsentOutcome,
    summary="Consent to a consumer's access to the subject's records, for a purpose and a "
    "period, within the consumer's active agreement",
    responses=problem_responses(
        *_TOKEN_CODES,
        p.WRONG_DATASET_TOKEN,
        p.DATASET_NOT_PERSONAL,
        p.NO_ACTIVE_AGREEMENT,
        p.UNKNOWN_PURPOSE,
        p.INVALID_PERIOD,
    ),
    openapi_extra=_SECURITY,
)
async def grant(
    body: ConsentRequest, claims: Subject, pool: PoolDep, request: Request, response: Response
) -> ConsentOutcome:
    change = await subjects.grant(pool, claims, body)
    response.headers["Location"] = f"/subjects/me/consents/{change.consent.consent_id}"
    return _outcome(request, change)


@router.get(
    "/consents/{consent_id}",
    response_model=SubjectConsent,
    summary="One of the subject's consents",
    responses=problem_responses(*_TOKEN_CODES, p.CONSENT_NOT_FOUND),
    openapi_extra=_SECURITY,
)
async def get_consent(consent_id: ConsentId, claims: Subject, pool: PoolDep) -> SubjectConsent:
    return await subjects.get_consent(pool, claims, consent_id)


@router.post(
    "/consents/{consent_id}/withdraw",
    response_model=ConsentOutcome,
    summary="Withdraw a consent, in one call",
    description="Answers once the withdrawal is committed and its event acknowledged by "
    "Kafka. If Kafka does not acknowledge it in time, 503 `event-not-acknowledged`: the "
    "withdrawal stays committed and is published once Kafka answers.",
    responses=problem_responses(
        *_TOKEN_CODES, p.CONSENT_NOT_FOUND, p.CONSENT_NOT_ACTIVE, p.EVENT_NOT_ACKNOWLEDGED
    ),
    openapi_extra=_SECURITY,
)
async def withdraw(
    consent_id: ConsentId, claims: Subject, pool: PoolDep, request: Request
) -> ConsentOutcome:
    change = await subjects.withdraw(pool, claims, consent_id)
    settings: ConsentSettings = request.app.state.settings
    await subjects.wait_published(pool, change, timeout_s=settings.publish_wait_s)
    return _outcome(request, change, ended=True)


@router.get(
    "/history",
    response_model=list[HistoryEntry],
    summary="Every ledger row about the subject's consents on the token's dataset",
    responses=problem_responses(*_TOKEN_CODES),
    openapi_extra=_SECURITY,
)
async def history(claims: Subject, pool: PoolDep) -> list[HistoryEntry]:
    return await subjects.history(pool, claims)


@router.get(
    "/export",
    response_model=SubjectExport,
    summary="Everything recorded about the subject on the token's dataset, as one JSON "
    "document (portability)",
    responses=problem_responses(*_TOKEN_CODES),
    openapi_extra=_SECURITY,
)
async def export(claims: Subject, pool: PoolDep) -> SubjectExport:
    return await subjects.export(pool, claims)


@router.post(
    "/consents/{consent_id}/verify",
    response_model=VerificationOut,
    summary="Verify the ledger rows of one of the subject's consents",
    description="Recomputes the hash chain over the consent's rows and the links they sit "
    "on, through the first checkpoint after them, and checks it against every stored "
    "checkpoint and the `checkpoints` the subject kept. Answers 200 either way: `ok` says "
    "whether the rows are intact, `broken` names the first break. Another subject's consent "
    "is not found.",
    responses=problem_responses(*_TOKEN_CODES, p.CONSENT_NOT_FOUND, NOT_IN_LEDGER),
    openapi_extra=_SECURITY,
)
async def verify(
    consent_id: ConsentId,
    claims: Subject,
    pool: PoolDep,
    request: Request,
    body: CheckpointTokens | None = None,
) -> dict[str, Any]:
    # The subject's own consent, or not found.
    consent = await subjects.get_consent(pool, claims, consent_id)
    tokens = body.checkpoints if body is not None else []
    try:
        async with pool.acquire() as conn:
            result = await verify_entity(
                conn, "consent", consent.consent_id, signer=signer_of(request), tokens=tokens
            )
    except EntityNotInLedger as exc:
        # The consent is recorded, its rows are not: they were deleted.
        raise NotFound(str(exc), code=NOT_IN_LEDGER.code) from exc
    return result.as_dict()
