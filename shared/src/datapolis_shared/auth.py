"""API keys: random, prefixed, stored only as hashes, with scopes and an owner.

A key reads ``dpk_<key id>_<secret>``. The id finds the row; the SHA-256 of the
whole key is compared in constant time. Keys carry 256 bits of randomness, so a
fast hash is enough (a slow password hash protects low-entropy secrets only).

Catalog issues and revokes keys and announces it on ``datapolis.catalog.events``;
every service keeps its own ``api_keys`` table in step (:func:`apply_key_event`),
so no request waits on another service.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from datapolis_shared.errors import Forbidden, Unauthenticated
from datapolis_shared.events.base import Event
from datapolis_shared.events.catalog import ApiKeyIssued, ApiKeyRevoked
from datapolis_shared.postgres.pool import Connection, Pool

KEY_PREFIX = "dpk_"
OPERATOR_ORG = "operator"

# Scopes a key may carry. The operator key has them all.
SCOPES = frozenset({"read", "publish", "ingest", "consent", "subscribe", "admin"})

SELECT_KEY = "SELECT org_id, scopes, secret_hash, revoked_at FROM api_keys WHERE key_id = $1"
UPSERT_KEY = """
INSERT INTO api_keys (key_id, org_id, scopes, secret_hash, issued_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key_id) DO NOTHING
"""
REVOKE_KEY = "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL"


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    key_id: str
    token: str  # shown once to its owner, never stored

    @property
    def secret_hash(self) -> str:
        return hash_key(self.token)


def generate_key() -> NewKey:
    key_id = secrets.token_hex(8)
    return NewKey(key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}")


def parse_key_id(token: str) -> str | None:
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    return key_id if sep and key_id and secret else None


@dataclass(frozen=True)
class Principal:
    """Who is calling: an organisation through one of its keys, or the operator."""

    org_id: str
    key_id: str
    scopes: frozenset[str]

    @property
    def is_operator(self) -> bool:
        return self.org_id == OPERATOR_ORG

    def require(self, scope: str) -> None:
        if scope not in self.scopes and not self.is_operator:
            raise Forbidden(
                f"this API key lacks the '{scope}' scope", code="missing-scope", scope=scope
            )

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden("only the operator may do this", code="operator-only")


class ApiKeyStore:
    """Resolves keys against this service's ``api_keys`` table.

    Positive answers are cached for ``cache_ttl_s`` so a busy producer does not
    cost one query per request; revocation therefore takes effect within that
    TTL plus the event's propagation time.
    """

    def __init__(self, pool: Pool, *, operator_key: str, cache_ttl_s: float = 1.0) -> None:
        self._pool = pool
        self._operator_hash = hash_key(operator_key)
        self._cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def resolve(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated("an API key is required", code="missing-api-key")
        token_hash = hash_key(token)
        if hmac.compare_digest(token_hash, self._operator_hash):
            return Principal(OPERATOR_ORG, "operator", SCOPES)
        cached = self._cache.get(token_hash)
        now = time.monotonic()
        if cached and now - cached[0] < self._cache_ttl_s:
            return cached[1]
        key_id = parse_key_id(token)
        row = await self._pool.fetchrow(SELECT_KEY, key_id) if key_id else None
        if row is None or not hmac.compare_digest(row["secret_hash"], token_hash):
            raise Unauthenticated("unknown API key", code="invalid-api-key")
        if row["revoked_at"] is not None:
            self._cache.pop(token_hash, None)
            raise Unauthenticated("this API key was revoked", code="revoked-api-key")
        principal = Principal(row["org_id"], key_id or "", frozenset(row["scopes"]))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token_hash] = (now, principal)
        return principal


async def save_key(
    conn: Connection | Pool,
    *,
    key_id: str,
    org_id: str,
    scopes: list[str],
    secret_hash: str,
    issued_at: datetime | None = None,
) -> None:
    await conn.execute(
        UPSERT_KEY, key_id, org_id, scopes, secret_hash, issued_at or datetime.now(UTC)
    )


async def revoke_key(conn: Connection | Pool, key_id: str, at: datetime) -> bool:
    return str(await conn.execute(REVOKE_KEY, key_id, at)).endswith(" 1")


async def apply_key_event(conn: Connection, event: Event) -> None:
    """Keep the local ``api_keys`` table in step with catalog's key events."""
    if isinstance(event, ApiKeyIssued):
        await save_key(
            conn,
            key_id=event.key_id,
            org_id=event.org_id,
            scopes=event.scopes,
            secret_hash=event.secret_hash,
            issued_at=event.issued_at,
        )
    elif isinstance(event, ApiKeyRevoked):
        # A revocation may overtake its issue on another partition; record the
        # key as revoked either way so it can never start working.
        await conn.execute(UPSERT_KEY, event.key_id, event.org_id, [], "revoked", event.revoked_at)
        await revoke_key(conn, event.key_id, event.revoked_at)
