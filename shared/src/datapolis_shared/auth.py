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
import ipaddress
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from datapolis_shared.errors import Forbidden, Throttled, Unauthenticated
from datapolis_shared.events.base import Event
from datapolis_shared.events.catalog import ApiKeyIssued, ApiKeyRevoked
from datapolis_shared.postgres.pool import Connection, Pool
from datapolis_shared.settings import AuthSettings

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


def client_key(host: str | None) -> str:
    """Whom failures are counted against: the client's address, with an IPv6
    client's whole /64 as one (one host usually holds the whole /64)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailedAuthThrottle:
    """A token bucket of failed authentications per client: a client may fail
    ``max_failures`` times at once, then once per ``failure_interval_s``;
    beyond that it is refused until the bucket refills. A client that keeps
    guessing gets one attempt per interval, and one whose key is still on its
    way (catalog's event) gets through soon after it arrives. Memory is
    bounded by ``tracked_clients``: the client that failed least recently is
    forgotten first."""

    def __init__(
        self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst = float(settings.max_failures)
        self._interval_s = settings.failure_interval_s
        self._max_clients = settings.tracked_clients
        self._clock = clock
        # client -> (attempts left, when counted); least recently failed first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _left(self, entry: tuple[float, float], now: float) -> float:
        left, at = entry
        return min(self._burst, left + (now - at) / self._interval_s)

    def check(self, client: str) -> None:
        """Raise :class:`Throttled` if ``client`` may not try a key now."""
        entry = self._buckets.get(client)
        if entry is None:
            return
        left = self._left(entry, self._clock())
        if left >= self._burst:
            del self._buckets[client]  # refilled: nothing to remember
        elif left < 1:
            raise Throttled(
                "too many failed authentications from this client; try again later",
                code="too-many-failed-authentications",
                retry_after_s=max(1, math.ceil((1 - left) * self._interval_s)),
            )

    def failed(self, client: str) -> None:
        now = self._clock()
        entry = self._buckets.pop(client, None)
        left = self._burst if entry is None else self._left(entry, now)
        self._buckets[client] = (left - 1, now)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)


class ApiKeyStore:
    """Resolves keys against this service's ``api_keys`` table.

    Positive answers are cached for ``cache_ttl_s`` so a busy producer does not
    cost one query per request; revocation therefore takes effect within that
    TTL plus the event's propagation time.

    Failed attempts are throttled per client (:class:`FailedAuthThrottle`): a
    client over the limit is refused before its key is compared or looked
    up, so guessing keys costs neither a query nor gives an answer.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        operator_key: str,
        cache_ttl_s: float = 1.0,
        throttle: FailedAuthThrottle | None = None,
    ) -> None:
        self._pool = pool
        self._operator_hash = hash_key(operator_key)
        self._cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._throttle = throttle if throttle is not None else FailedAuthThrottle(AuthSettings())

    async def resolve(self, token: str | None, *, client: str | None = None) -> Principal:
        """The key's principal; ``client`` is the caller's address, against
        which failures are counted."""
        if not token:
            raise Unauthenticated("an API key is required", code="missing-api-key")
        who = client_key(client)
        self._throttle.check(who)
        try:
            return await self._resolve(token)
        except Unauthenticated:
            self._throttle.failed(who)
            raise

    async def _resolve(self, token: str) -> Principal:
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
