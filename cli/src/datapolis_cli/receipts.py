"""Receipts (JWS, EdDSA) verified offline against a JWKS."""

from __future__ import annotations

import json
from typing import Any

import jwt

from datapolis_cli.errors import CliError, ExitCode


def verify(receipt: str, jwks: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The receipt's payload and the key id that verified it; ``CliError``
    (invalid input) when it does not verify."""
    token = receipt.strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.exceptions.DecodeError as exc:
        raise CliError(
            "not a receipt", exit_code=ExitCode.INVALID, detail=str(exc), code="malformed-receipt"
        ) from None
    kid = header.get("kid")
    try:
        keys = jwt.PyJWKSet.from_dict(jwks).keys
    except jwt.exceptions.PyJWKSetError as exc:
        raise CliError(
            "the JWKS has no usable key", exit_code=ExitCode.INVALID, detail=str(exc)
        ) from None
    key = next((k for k in keys if k.key_id == kid), None)
    if key is None:
        raise CliError(
            "no published key signed this receipt",
            exit_code=ExitCode.INVALID,
            detail=f"kid {kid!r} is not in the JWKS",
            code="unknown-key",
        )
    try:
        raw = jwt.api_jws.PyJWS().decode(token, key.key, algorithms=["EdDSA"])
    except jwt.exceptions.InvalidSignatureError:
        raise CliError(
            "the receipt's signature does not verify",
            exit_code=ExitCode.INVALID,
            code="bad-signature",
        ) from None
    except jwt.exceptions.PyJWTError as exc:
        raise CliError(
            "the receipt does not verify", exit_code=ExitCode.INVALID, detail=str(exc)
        ) from None
    payload: dict[str, Any] = json.loads(raw)
    return payload, str(kid)
