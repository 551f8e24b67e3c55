"""An issuer that publishes its keys at a URL (an OpenID Connect provider):
the keys are fetched once and kept, fetched again when they age or when a
token names a key the provider added since, and a provider that does not
answer makes the call retryable rather than the token invalid."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt as pyjwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from datapolis_consent.settings import TokenIssuer
from datapolis_consent.subject_tokens import (
    UNKNOWN_KID_REFETCH_S,
    InvalidSubjectToken,
    IssuerKeysUnavailable,
    SubjectTokenVerifier,
)

ISSUER = "https://city-account.example"
AUDIENCE = "https://consent.datapolis.example"


def _jwk(private: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    return {**json.loads(pyjwt.algorithms.OKPAlgorithm.to_jwk(private.public_key())), "kid": kid}


@dataclass
class Provider:
    """An OpenID Connect provider's JWKS endpoint, on a port of the test's own."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    up: bool = True
    url: str = ""

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if not self.up:
            return web.Response(status=503)
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    state = Provider()
    app = web.Application()
    app.router.add_get("/jwks", state.jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/jwks"
    try:
        yield state
    finally:
        await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _token(key: Ed25519PrivateKey, kid: str, now: float) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "sub-42",
        "dataset": "household-energy",
        "exp": int(now) + 600,
    }
    return pyjwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


async def test_keys_at_a_url_are_fetched_kept_and_refreshed(provider: Provider) -> None:
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    provider.keys = [_jwk(first, "k1")]
    clock = Clock()
    issuer = TokenIssuer(issuer=ISSUER, audience=AUDIENCE, jwks_url=provider.url, jwks_cache_s=3600)
    verifier = SubjectTokenVerifier([issuer], clock=clock)
    try:
        for _ in range(3):
            assert (await verifier.verify(_token(first, "k1", clock.now))).subject == "sub-42"
        assert provider.fetches == 1

        # The provider adds a key and signs with it: a token naming it makes
        # the service fetch the keys again (not more often than the bound).
        provider.keys = [_jwk(first, "k1"), _jwk(second, "k2")]
        clock.now += UNKNOWN_KID_REFETCH_S
        assert (await verifier.verify(_token(second, "k2", clock.now))).subject == "sub-42"
        assert provider.fetches == 2

        # A key nobody published, again and again: at most one fetch per bound.
        stranger = Ed25519PrivateKey.generate()
        for _ in range(5):
            with pytest.raises(InvalidSubjectToken):
                await verifier.verify(_token(stranger, "k3", clock.now))
        assert provider.fetches == 2

        # Keys older than jwks_cache_s are fetched again: a key the provider
        # dropped is then refused.
        provider.keys = [_jwk(second, "k2")]
        clock.now += 3600
        with pytest.raises(InvalidSubjectToken):
            await verifier.verify(_token(first, "k1", clock.now))
        assert provider.fetches == 3
    finally:
        await verifier.aclose()


async def test_a_provider_that_does_not_answer_makes_the_call_retryable(
    provider: Provider,
) -> None:
    signer = Ed25519PrivateKey.generate()
    provider.keys = [_jwk(signer, "k1")]
    provider.up = False
    clock = Clock()
    issuer = TokenIssuer(issuer=ISSUER, audience=AUDIENCE, jwks_url=provider.url)
    verifier = SubjectTokenVerifier([issuer], clock=clock)
    try:
        with pytest.raises(IssuerKeysUnavailable) as unavailable:
            await verifier.verify(_token(signer, "k1", clock.now))
        assert unavailable.value.code == "unavailable"
        provider.up = True
        assert (await verifier.verify(_token(signer, "k1", clock.now))).subject == "sub-42"
    finally:
        await verifier.aclose()
