"""Subject tokens: a JWT by which a data subject proves who they are (``sub``,
a pseudonymous id) and which dataset they act on (``dataset``).

Tokens come from configured issuers (the publisher, the operator, an OpenID
Connect provider), each with its ``iss``, the audience it names for the
platform, and its public keys: inline, or a JWKS URL fetched and cached, so a
provider can rotate its keys without a change here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from datapolis_consent.keys import eddsa_accepted, key_set_from_jwks
from datapolis_consent.settings import ASYMMETRIC_ALGORITHMS, TokenIssuer
from datapolis_shared.errors import Unauthenticated, Unavailable

# At most this often a JWKS URL is fetched again because a token names a key
# it does not list (a provider that rotated), so junk tokens cannot make the
# service hammer the provider.
UNKNOWN_KID_REFETCH_S = 30.0


class InvalidSubjectToken(Unauthenticated):
    """Malformed, badly signed, for another audience, or lacking a claim."""

    code = "invalid-subject-token"


class ExpiredSubjectToken(InvalidSubjectToken):
    code = "expired-subject-token"


class UnknownTokenIssuer(InvalidSubjectToken):
    code = "unknown-token-issuer"


class IssuerKeysUnavailable(Unavailable):
    """The issuer's JWKS URL does not answer with a key set; retry later."""


@dataclass(frozen=True)
class SubjectClaims:
    subject: str
    dataset: str
    issuer: str
    expires_at: float


def _segment(token: str, index: int) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidSubjectToken("a subject token is a JWS in compact form (three parts)")
    try:
        raw = base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4))
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidSubjectToken("the subject token is not base64url JSON") from error
    if not isinstance(value, dict):
        raise InvalidSubjectToken("the subject token's header and claims are JSON objects")
    return value


class _IssuerKeys:
    """One issuer's public keys: inline, or fetched from its JWKS URL and kept
    ``jwks_cache_s`` (fetched again sooner when a token names an unknown key)."""

    def __init__(
        self, issuer: TokenIssuer, http: httpx.AsyncClient, clock: Callable[[], float]
    ) -> None:
        self._issuer = issuer
        self._http = http
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        if issuer.jwks is not None:
            self._keys = _key_set(issuer.jwks, issuer.issuer)

    async def key_set(self, kid: str | None) -> KeySet:
        if self._issuer.jwks_url is None:
            assert self._keys is not None
            return self._keys
        async with self._lock:
            age = self._clock() - self._fetched_at
            stale = self._keys is None or age >= self._issuer.jwks_cache_s
            unknown = (
                self._keys is not None
                and kid is not None
                and all(key.kid != kid for key in self._keys.keys)
                and age >= UNKNOWN_KID_REFETCH_S
            )
            if stale or unknown:
                self._keys = await self._fetch()
                self._fetched_at = self._clock()
            assert self._keys is not None
            return self._keys

    async def _fetch(self) -> KeySet:
        url = str(self._issuer.jwks_url)
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise IssuerKeysUnavailable(
                f"the keys of issuer {self._issuer.issuer} cannot be fetched now"
            ) from error
        return _key_set(document, self._issuer.issuer)


def _key_set(document: Any, issuer: str) -> KeySet:
    try:
        keys = key_set_from_jwks(document)
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise IssuerKeysUnavailable(f"issuer {issuer} publishes no valid JWK Set") from error
    if any(key.is_private for key in keys.keys if key.key_type != "oct"):
        # A JWKS with private parts is a misconfiguration; refuse to trust it.
        raise IssuerKeysUnavailable(f"issuer {issuer} publishes private keys")
    # Symmetric keys are never used: an issuer's keys are public, and an HMAC
    # key known to the platform would let the platform forge tokens.
    return KeySet([key for key in keys.keys if key.key_type != "oct"])


class SubjectTokenVerifier:
    """Verifies subject tokens against the configured issuers."""

    def __init__(
        self,
        issuers: Sequence[TokenIssuer],
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http or httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self._owns_http = http is None
        self._clock = clock
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        self._keys = {issuer.issuer: _IssuerKeys(issuer, self._http, clock) for issuer in issuers}

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def verify(self, token: str) -> SubjectClaims:
        header = _segment(token, 0)
        unverified = _segment(token, 1)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
            # "none", HS256 and friends: never, whatever the issuer.
            raise InvalidSubjectToken(f"a subject token is not accepted signed with {alg!r}")
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise UnknownTokenIssuer("the subject token's issuer is not one the platform trusts")
        if alg not in issuer.algorithms:
            raise InvalidSubjectToken(f"issuer {issuer.issuer} does not sign with {alg}")
        kid = header.get("kid")
        keys = await self._keys[issuer.issuer].key_set(kid if isinstance(kid, str) else None)
        try:
            with eddsa_accepted():
                decoded = jwt.decode(token, keys, algorithms=issuer.algorithms)
        except BadSignatureError as error:
            raise InvalidSubjectToken("the subject token's signature does not verify") from error
        except (JoseError, ValueError) as error:
            raise InvalidSubjectToken("the subject token cannot be verified") from error
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=issuer.leeway_s,
            iss={"essential": True, "value": issuer.issuer},
            aud={"essential": True, "value": issuer.audience},
            sub={"essential": True},
            exp={"essential": True},
            dataset={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as error:
            raise ExpiredSubjectToken("the subject token has expired") from error
        except MissingClaimError as error:
            raise InvalidSubjectToken(
                f"the subject token lacks a required claim ({error.description})"
            ) from error
        except ClaimError as error:
            raise InvalidSubjectToken(
                f"the subject token's claim is not acceptable ({error.description})"
            ) from error
        dataset = claims["dataset"]
        if not isinstance(dataset, str) or not dataset:
            raise InvalidSubjectToken("the subject token's dataset claim is not a dataset slug")
        return SubjectClaims(
            subject=claims["sub"],
            dataset=dataset,
            issuer=issuer.issuer,
            expires_at=float(claims["exp"]),
        )
