"""Idempotency-Key for HTTP batches, kept in PostgreSQL with the first answer.

A retry with the same key (same organisation, same dataset) and the same body
gets the first answer back and writes nothing; the same key with another body
is refused (422): the key was reused for a different request. While the first
request is still running, a retry gets 409. Only successful answers are kept:
a batch that failed (503, 429...) releases its key, so its retry runs again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass

import asyncpg

from datapolis_shared.errors import Conflict, InvalidInput, Unavailable
from datapolis_shared.postgres.pool import Pool

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255

CLAIM_KEY = """
INSERT INTO idempotency_keys
    (org_id, dataset_id, idempotency_key, request_hash, leased_until, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), now() + make_interval(secs => $6))
ON CONFLICT (org_id, dataset_id, idempotency_key) DO UPDATE SET
    request_hash = EXCLUDED.request_hash,
    response = NULL,
    leased_until = EXCLUDED.leased_until,
    created_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE idempotency_keys.expires_at < now()
   OR (idempotency_keys.response IS NULL AND idempotency_keys.leased_until < now())
RETURNING 1
"""
SELECT_KEY = """
SELECT request_hash, response FROM idempotency_keys
WHERE org_id = $1 AND dataset_id = $2 AND idempotency_key = $3
"""
STORE_RESPONSE = """
UPDATE idempotency_keys SET response = $4
WHERE org_id = $1 AND dataset_id = $2 AND idempotency_key = $3
"""
RELEASE_KEY = """
DELETE FROM idempotency_keys
WHERE org_id = $1 AND dataset_id = $2 AND idempotency_key = $3 AND response IS NULL
"""
PURGE_EXPIRED = "DELETE FROM idempotency_keys WHERE expires_at < now()"

_PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def request_hash(content_type: str, body: bytes) -> str:
    return hashlib.sha256(content_type.encode() + b"\n" + body).hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            code="invalid-idempotency-key",
        )
    return key


@dataclass(frozen=True, slots=True)
class Claim:
    org_id: str
    dataset_id: str
    key: str


class IdempotencyStore:
    def __init__(self, pool: Pool, *, window_s: int, lease_s: int) -> None:
        self._pool = pool
        self._window_s = window_s
        self._lease_s = lease_s

    async def claim(self, claim: Claim, body_hash: str) -> bytes | None:
        """Take the key for this request (None), or the answer to replay."""
        args = (claim.org_id, claim.dataset_id, claim.key)
        try:
            # A key released between our two statements is claimed on the next turn.
            for _ in range(3):
                taken = await self._pool.fetchval(
                    CLAIM_KEY, *args, body_hash, float(self._lease_s), float(self._window_s)
                )
                if taken:
                    return None
                row = await self._pool.fetchrow(SELECT_KEY, *args)
                if row is None:
                    continue
                if row["request_hash"] != body_hash:
                    raise InvalidInput(
                        "this Idempotency-Key was already used with a different request body",
                        code="idempotency-key-reused",
                    )
                if row["response"] is None:
                    raise Conflict(
                        "a request with this Idempotency-Key is still being processed",
                        code="idempotency-key-in-progress",
                    )
                return bytes(row["response"])
        except _PG_ERRORS as exc:
            raise Unavailable(
                "PostgreSQL is unavailable; try again later", retry_after_s=2
            ) from exc
        raise Conflict(
            "this Idempotency-Key is contended; retry", code="idempotency-key-in-progress"
        )

    async def store(self, claim: Claim, response: bytes) -> None:
        try:
            await self._pool.execute(
                STORE_RESPONSE, claim.org_id, claim.dataset_id, claim.key, response
            )
        except _PG_ERRORS as exc:
            # The records are in Kafka, so the client still gets its 2xx. A
            # retry with this key waits for the lease to end and is then
            # deduplicated on record ids only.
            log.warning("could not store the answer of Idempotency-Key %r: %r", claim.key, exc)

    async def release(self, claim: Claim) -> None:
        # If PostgreSQL is down the lease expires on its own.
        with contextlib.suppress(*_PG_ERRORS):
            await self._pool.execute(RELEASE_KEY, claim.org_id, claim.dataset_id, claim.key)

    async def purge_expired(self) -> int:
        status = await self._pool.execute(PURGE_EXPIRED)
        return int(str(status).rsplit(" ", 1)[-1] or 0)
