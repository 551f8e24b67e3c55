"""The ledger over HTTP: its published checkpoints (public), and verification
of the chain or of one agreement's or consent's rows: the whole chain and any
rows by the operator, an agreement's rows by its parties too (a subject
verifies their consent's rows under /subjects/me, see api.subjects)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datapolis_consent import agreements
from datapolis_consent.api import problems as p
from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger.jws import KeyRingSigner
from datapolis_consent.ledger.publish import StoredCheckpoint, latest_checkpoint, list_checkpoints
from datapolis_consent.ledger.verify import EntityNotInLedger, verify_chain, verify_entity
from datapolis_shared.errors import Forbidden, NotFound
from datapolis_shared.http.app import Caller, RuntimeDep
from datapolis_shared.http.openapi import (
    MISSING_SCOPE,
    OPERATOR_ONLY,
    ProblemCode,
    problem_responses,
)
from datapolis_shared.http.strict_json import StrictJsonRoute

NO_CHECKPOINT_YET = ProblemCode(
    "no-checkpoint-yet", 404, "no checkpoint of the ledger has been published yet"
)
NOT_IN_LEDGER = ProblemCode(
    "not-in-ledger", 404, "no ledger row is about this agreement or consent"
)
# Tokens a party may bring to one verification: a history's worth, not a flood.
MAX_TOKENS = 1000
MAX_TOKEN_CHARS = 4096

router = APIRouter(prefix="/ledger", tags=["ledger"], route_class=StrictJsonRoute)


class PublishedCheckpoint(BaseModel):
    id: int = Field(description="its place in the list of checkpoints, in the order made")
    sequence: int = Field(description="the ledger sequence of the head it pins")
    hash: str = Field(description="the hash of that row, lower-case hex SHA-256")
    checkpointed_at: datetime
    token: str = Field(
        description="the signed checkpoint: a compact JWS (EdDSA) whose payload is the "
        "RFC 8785 form of `{checkpointed_at, hash, sequence, type}`, verifiable with the keys "
        "at /.well-known/jwks.json. Keep it: it proves the history up to `sequence` later."
    )

    @classmethod
    def of(cls, stored: StoredCheckpoint) -> PublishedCheckpoint:
        return cls(
            id=stored.id,
            sequence=stored.sequence,
            hash=stored.hash,
            checkpointed_at=stored.checkpointed_at,
            token=stored.token,
        )


class CheckpointPage(BaseModel):
    items: list[PublishedCheckpoint]
    next_after: int | None = Field(
        description="pass as `after` for the next page; null on the last page"
    )


Tokens = list[Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_CHARS)]]
_TOKENS_DESCRIPTION = (
    "checkpoint tokens published earlier that the caller kept; the rows are "
    "checked against them besides the stored ones"
)


class CheckpointTokens(BaseModel):
    """What a party brings to the verification of its own rows."""

    model_config = ConfigDict(extra="forbid")

    checkpoints: Tokens = Field(
        default_factory=list, max_length=MAX_TOKENS, description=_TOKENS_DESCRIPTION
    )


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agreement_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="only this agreement's rows"
    )
    consent_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="only this consent's rows"
    )
    checkpoints: Tokens = Field(
        default_factory=list, max_length=MAX_TOKENS, description=_TOKENS_DESCRIPTION
    )

    @model_validator(mode="after")
    def _at_most_one_entity(self) -> VerifyRequest:
        if self.agreement_id is not None and self.consent_id is not None:
            raise ValueError("give agreement_id or consent_id, not both")
        return self


class ChainBreakOut(BaseModel):
    sequence: int | None = Field(description="where; null for a checkpoint that does not verify")
    kind: Literal[
        "missing",
        "reordered",
        "unlinked",
        "altered",
        "head_mismatch",
        "checkpoint_mismatch",
        "checkpoint_invalid",
    ]
    detail: str


class HeadOut(BaseModel):
    sequence: int
    hash: str


class VerificationOut(BaseModel):
    ok: bool = Field(description="true when the rows checked are intact")
    first_sequence: int
    last_sequence: int = Field(description="the last row checked and found intact")
    rows: int
    checkpoints_matched: int
    anchored_at: int | None = Field(description="the latest checkpoint the rows matched")
    head: HeadOut
    append_only_enforced: bool = Field(
        description="false when the trigger refusing UPDATE, DELETE and TRUNCATE is switched off"
    )
    broken: ChainBreakOut | None = Field(description="the first break found; null when intact")


def signer_of(request: Request) -> KeyRingSigner:
    """The app's receipt keys, as the ledger's signer."""
    keys: KeyRing = request.app.state.receipt_keys
    return KeyRingSigner(keys)


@router.get(
    "/checkpoints/latest",
    response_model=PublishedCheckpoint,
    summary="The latest signed checkpoint of the ledger's head",
    description="No API key needed: anyone may fetch and keep checkpoints, and later ask "
    "`POST /ledger/verify` (or run `python -m datapolis_consent.ledger verify`) to prove the "
    "history up to them was not rewritten.",
    responses=problem_responses(NO_CHECKPOINT_YET),
)
async def get_latest_checkpoint(runtime: RuntimeDep) -> PublishedCheckpoint:
    latest = await latest_checkpoint(runtime.pool)
    if latest is None:
        raise NotFound("no checkpoint has been published yet", code=NO_CHECKPOINT_YET.code)
    return PublishedCheckpoint.of(latest)


@router.get(
    "/checkpoints",
    response_model=CheckpointPage,
    summary="The signed checkpoints, in the order they were made",
    description="No API key needed. Pages through every checkpoint ever published.",
)
async def get_checkpoints(
    runtime: RuntimeDep,
    after: Annotated[
        int, Query(ge=0, le=2**62, description="the `id` of the last checkpoint already seen")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointPage:
    # One more than asked: whether another page follows, without an empty last page.
    found = await list_checkpoints(runtime.pool, after_id=after, limit=limit + 1)
    page = found[:limit]
    next_after = page[-1].id if len(found) > limit else None
    return CheckpointPage(items=[PublishedCheckpoint.of(c) for c in page], next_after=next_after)


@router.post(
    "/verify",
    response_model=VerificationOut,
    summary="Verify the ledger (the operator), or one agreement's rows (its parties too)",
    description="Recomputes the hash chain and checks it against every stored checkpoint and "
    "the `checkpoints` given. Answers 200 either way: `ok` says whether the rows are intact, "
    "`broken` names the first break (a row altered, deleted or reordered, or history "
    "rewritten since a checkpoint). The operator verifies the whole chain, or any "
    "agreement's or consent's rows; the publisher or the consumer of an agreement verifies "
    "that agreement's rows (`agreement_id`), and no other; a data subject verifies their "
    "consent's rows at `POST /subjects/me/consents/{consent_id}/verify`.",
    responses=problem_responses(MISSING_SCOPE, OPERATOR_ONLY, p.AGREEMENT_NOT_FOUND, NOT_IN_LEDGER),
)
async def verify(
    body: VerifyRequest, caller: Caller, runtime: RuntimeDep, request: Request
) -> dict[str, Any]:
    if not caller.is_operator:
        if body.agreement_id is None:
            raise Forbidden(
                "only the operator verifies the whole chain or a consent's rows; a party "
                "verifies its own agreement's rows (agreement_id)",
                code=OPERATOR_ONLY.code,
            )
        # A party's own agreement, or not found: never another party's rows.
        await agreements.get_agreement(runtime.pool, caller, body.agreement_id)
    signer = signer_of(request)
    try:
        async with runtime.pool.acquire() as conn:
            if body.agreement_id is not None:
                result = await verify_entity(
                    conn, "agreement", body.agreement_id, signer=signer, tokens=body.checkpoints
                )
            elif body.consent_id is not None:
                result = await verify_entity(
                    conn, "consent", body.consent_id, signer=signer, tokens=body.checkpoints
                )
            else:
                result = await verify_chain(conn, signer=signer, tokens=body.checkpoints)
    except EntityNotInLedger as exc:
        raise NotFound(str(exc), code=NOT_IN_LEDGER.code) from exc
    return result.as_dict()
