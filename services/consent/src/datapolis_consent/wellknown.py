"""The public keys that verify receipts, at /.well-known/jwks.json."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from datapolis_consent.keys import KeyRing
from datapolis_shared.http.strict_json import StrictJsonRoute

JWKS_PATH = "/.well-known/jwks.json"
# Verifiers may keep the set this long; one that meets a receipt naming a key
# it does not hold fetches the set again (a rotation adds the new key first).
JWKS_MAX_AGE_S = 300

router = APIRouter(tags=["receipts"], route_class=StrictJsonRoute)


class PublicJwk(BaseModel):
    """An Ed25519 public key (RFC 8037), named by its RFC 7638 thumbprint."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str = Field(description="the public key, base64url")
    kid: str = Field(description="the key's RFC 7638 thumbprint; a receipt's `kid` names it")
    use: Literal["sig"]
    alg: Literal["EdDSA"]


class JsonWebKeySet(BaseModel):
    keys: list[PublicJwk] = Field(
        description="the current signing key first, then retired ones, which still verify "
        "the receipts they signed"
    )


@router.get(
    JWKS_PATH,
    summary="The public keys that verify consent receipts (a JWK Set)",
    description="No API key needed. Every receipt is a JWS whose protected header names "
    "one of these keys in `kid`; any JOSE library verifies it with the key (algorithm "
    "`EdDSA`). Only public key material is served. Keys retired by a rotation stay listed, "
    "so receipts they signed still verify.",
    response_model=JsonWebKeySet,
    responses={
        200: {
            "description": "The JWK Set: public keys only, the current signing key first",
            "headers": {
                "Cache-Control": {
                    "description": f"`public, max-age={JWKS_MAX_AGE_S}`",
                    "schema": {"type": "string"},
                }
            },
        }
    },
)
async def jwks(request: Request) -> JSONResponse:
    keys: KeyRing = request.app.state.receipt_keys
    return JSONResponse(keys.jwks(), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"})
