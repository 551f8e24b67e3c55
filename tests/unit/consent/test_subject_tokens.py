"""Subject tokens are accepted only from configured issuers, signed with an
asymmetric key the issuer publishes, for the platform's audience, in their
validity window, and carrying the subject and the dataset. Every refusal has a
stable code."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from datapolis_consent.settings import ConsentSettings, TokenIssuer
from datapolis_consent.subject_tokens import (
    ExpiredSubjectToken,
    InvalidSubjectToken,
    SubjectTokenVerifier,
    UnknownTokenIssuer,
)

NOW = 1_800_000_000
ISSUER = "https://publisher.example/subjects"
AUDIENCE = "https://consent.datapolis.example"

SIGNER = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
EC_SIGNER = generate_private_key(SECP256R1())


def _public_jwk(private: Any, kid: str) -> dict[str, Any]:
    algorithm = pyjwt.algorithms.OKPAlgorithm if kid.startswith("ed") else None
    if algorithm is None:
        jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    else:
        jwk = json.loads(algorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid}


ISSUER_JWKS = {"keys": [_public_jwk(SIGNER, "ed-1"), _public_jwk(EC_SIGNER, "ec-1")]}


def _issuer(**overrides: Any) -> TokenIssuer:
    return TokenIssuer.model_validate(
        {"issuer": ISSUER, "audience": AUDIENCE, "jwks": ISSUER_JWKS, **overrides}
    )


def _verifier(*issuers: TokenIssuer) -> SubjectTokenVerifier:
    return SubjectTokenVerifier(issuers or (_issuer(),), clock=lambda: NOW)


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "sub-7f3a",
        "dataset": "household-energy",
        "iat": NOW - 10,
        "exp": NOW + 600,
        **overrides,
    }
    return {name: value for name, value in claims.items() if value is not None}


def _token(
    claims: dict[str, Any] | None = None,
    *,
    key: Any = SIGNER,
    algorithm: str = "EdDSA",
    kid: str | None = "ed-1",
) -> str:
    headers = {"kid": kid} if kid else None
    return pyjwt.encode(claims or _claims(), key, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_token_of_a_configured_issuer_names_its_subject_and_dataset() -> None:
    verified = await _verifier().verify(_token())
    assert (verified.subject, verified.dataset, verified.issuer) == (
        "sub-7f3a",
        "household-energy",
        ISSUER,
    )
    assert verified.expires_at == NOW + 600
    # An issuer's other key and algorithm, and an audience among several.
    es256 = _token(_claims(aud=["other", AUDIENCE]), key=EC_SIGNER, algorithm="ES256", kid="ec-1")
    assert (await _verifier().verify(es256)).subject == "sub-7f3a"


async def test_an_expired_token_is_refused_beyond_the_leeway() -> None:
    with pytest.raises(ExpiredSubjectToken) as expired:
        await _verifier().verify(_token(_claims(exp=NOW - 31)))
    assert expired.value.code == "expired-subject-token"
    # Clocks drift: within the leeway (30 s) it is still accepted.
    assert (await _verifier().verify(_token(_claims(exp=NOW - 29)))).subject == "sub-7f3a"


@pytest.mark.parametrize(
    "claims",
    [
        _claims(nbf=NOW + 120),  # not valid yet
        _claims(iat=NOW + 120),  # issued in the future
        _claims(aud="https://another-platform.example"),
        _claims(sub=None),
        _claims(dataset=None),
        _claims(exp=None),  # a token that never expires is not one to accept
        _claims(aud=None),
        _claims(dataset=""),
        _claims(dataset=["household-energy"]),
        _claims(sub=42),
    ],
    ids=[
        "nbf-future",
        "iat-future",
        "foreign-audience",
        "no-sub",
        "no-dataset",
        "no-exp",
        "no-aud",
        "empty-dataset",
        "dataset-not-a-slug",
        "sub-not-a-string",
    ],
)
async def test_a_token_with_unacceptable_claims_is_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidSubjectToken) as refused:
        await _verifier().verify(_token(claims))
    assert refused.value.code == "invalid-subject-token"


async def test_a_token_of_an_unknown_issuer_is_refused() -> None:
    with pytest.raises(UnknownTokenIssuer) as refused:
        await _verifier().verify(_token(_claims(iss="https://elsewhere.example")))
    assert refused.value.code == "unknown-token-issuer"
    with pytest.raises(UnknownTokenIssuer):
        await _verifier().verify(_token(_claims(iss=None)))


async def test_a_token_signed_by_another_key_is_refused() -> None:
    # The stranger claims the issuer's kid; the signature gives it away.
    with pytest.raises(InvalidSubjectToken) as refused:
        await _verifier().verify(_token(key=STRANGER))
    assert refused.value.code == "invalid-subject-token"
    with pytest.raises(InvalidSubjectToken):
        await _verifier().verify(_token(key=STRANGER, kid="ed-unknown"))


async def test_a_tampered_token_is_refused() -> None:
    header, _, signature = _token().split(".")
    claims = _b64(json.dumps(_claims(sub="someone-else")).encode())
    with pytest.raises(InvalidSubjectToken):
        await _verifier().verify(".".join([header, claims, signature]))


async def test_an_unsigned_token_is_refused() -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = _b64(json.dumps(_claims()).encode())
    with pytest.raises(InvalidSubjectToken):
        await _verifier().verify(f"{header}.{claims}.")


async def test_an_hmac_token_keyed_with_the_issuers_public_key_is_refused() -> None:
    """The algorithm confusion attack: HS256 with the public key as the secret."""
    public_x = base64.urlsafe_b64decode(ISSUER_JWKS["keys"][0]["x"] + "==")
    forged = _token(key=public_x, algorithm="HS256")
    with pytest.raises(InvalidSubjectToken):
        await _verifier().verify(forged)
    # Even an issuer misconfigured with a symmetric key in its set.
    secret = {"kty": "oct", "k": _b64(public_x), "kid": "ed-1"}
    lax = _issuer(jwks={"keys": [secret, *ISSUER_JWKS["keys"]]})
    with pytest.raises(InvalidSubjectToken):
        await _verifier(lax).verify(forged)


async def test_an_algorithm_the_issuer_does_not_use_is_refused() -> None:
    only_eddsa = _issuer(algorithms=["EdDSA"])
    es256 = _token(key=EC_SIGNER, algorithm="ES256", kid="ec-1")
    with pytest.raises(InvalidSubjectToken):
        await _verifier(only_eddsa).verify(es256)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "e30.e30.e30.e30", "W10.W10.x"])
async def test_something_that_is_no_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidSubjectToken):
        await _verifier().verify(token)


def test_issuer_settings_refuse_symmetric_algorithms_and_ambiguous_keys() -> None:
    for overrides in (
        {"algorithms": ["HS256"]},
        {"algorithms": ["none"]},
        {"jwks": None},  # no keys at all
        {"jwks_url": "https://publisher.example/jwks.json"},  # both sources
    ):
        with pytest.raises(ValidationError):
            _issuer(**overrides)
    production: dict[str, Any] = {
        "operator_key": "dpk_operator_" + "x" * 40,
        "postgres": {"dsn": "postgresql://consent:s3cret@db:5432/datapolis"},
        "receipts": {"signing_key": "-"},
    }
    plain_http = _issuer(jwks=None, jwks_url="http://publisher.example/jwks.json")
    with pytest.raises(ValidationError, match="must be https"):
        ConsentSettings.model_validate({**production, "subject_token_issuers": [plain_http]})
    # A local provider over plain HTTP is fine in development.
    assert ConsentSettings(dev=True, subject_token_issuers=[plain_http])
    with pytest.raises(ValidationError, match="listed once"):
        ConsentSettings(dev=True, subject_token_issuers=[_issuer(), _issuer(audience="another")])
