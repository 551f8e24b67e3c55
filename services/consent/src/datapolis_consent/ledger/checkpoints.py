"""Signed checkpoints of the chain head.

A checkpoint is the head's sequence and hash at a time, signed by the
platform. Since every hash covers the one before it, a checkpoint pins the
whole history up to its sequence: a party that keeps an old checkpoint can
later ask for the chain and check that the row at that sequence still has that
hash, so history was not rewritten since, even by someone able to recompute
every hash.

The signed payload is the RFC 8785 form of::

    {"checkpointed_at": "...Z", "hash": "<hex>", "sequence": N,
     "type": "datapolis.consent.ledger.checkpoint"}

The ``type`` keeps a checkpoint from being mistaken for anything else the
same keys sign (receipts). How it is signed is the signer's business (in
production, a JWS with the platform's Ed25519 keys); the ledger only needs
the :class:`Signer` protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import rfc8785

from datapolis_consent.ledger.chain import LedgerError, format_instant
from datapolis_consent.ledger.store import head
from datapolis_shared.postgres.pool import Connection

CHECKPOINT_TYPE = "datapolis.consent.ledger.checkpoint"

INSERT_CHECKPOINT = """
INSERT INTO ledger_checkpoints (sequence, hash, checkpointed_at, token) VALUES ($1, $2, $3, $4)
"""
STORED_TOKENS = "SELECT token FROM ledger_checkpoints ORDER BY checkpoint_id"


class InvalidSignature(LedgerError):
    """A token that no key of the platform signed, or that is malformed."""


class InvalidCheckpoint(LedgerError):
    """A token that is not a valid signed checkpoint."""


class Signer(Protocol):
    def sign(self, payload: bytes) -> str:
        """A compact token carrying ``payload`` and the platform's signature of it."""
        ...

    def verify(self, token: str) -> bytes:
        """The payload of a token the platform signed (with any of its current or
        past keys); raises :class:`InvalidSignature` otherwise."""
        ...


@dataclass(frozen=True)
class Checkpoint:
    sequence: int
    hash: str
    checkpointed_at: datetime
    token: str


def checkpoint_payload(sequence: int, digest: str, checkpointed_at: datetime) -> bytes:
    return rfc8785.dumps(
        {
            "checkpointed_at": format_instant(checkpointed_at),
            "hash": digest,
            "sequence": sequence,
            "type": CHECKPOINT_TYPE,
        }
    )


def open_checkpoint(token: str, signer: Signer) -> Checkpoint:
    """The checkpoint a token proves; raises :class:`InvalidCheckpoint`."""
    try:
        payload = signer.verify(token)
    except InvalidSignature as exc:
        raise InvalidCheckpoint(f"the checkpoint's signature does not verify: {exc}") from exc
    try:
        sequence, digest, at = _claims(payload)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCheckpoint(f"the signed payload is not a ledger checkpoint: {exc}") from exc
    return Checkpoint(sequence, digest, at, token)


def _claims(payload: bytes) -> tuple[int, str, datetime]:
    claims = json.loads(payload)
    if not isinstance(claims, dict) or claims.get("type") != CHECKPOINT_TYPE:
        raise ValueError("not a ledger checkpoint")
    sequence, digest = claims["sequence"], claims["hash"]
    if not isinstance(sequence, int) or sequence < 0 or not isinstance(digest, str):
        raise ValueError("malformed sequence or hash")
    return sequence, digest, datetime.fromisoformat(claims["checkpointed_at"])


async def create_checkpoint(conn: Connection, signer: Signer) -> Checkpoint:
    """Signs the committed head as it is now and stores the checkpoint."""
    current = await head(conn)
    at = datetime.now(UTC)
    token = signer.sign(checkpoint_payload(current.sequence, current.hash, at))
    await conn.execute(INSERT_CHECKPOINT, current.sequence, current.hash, at, token)
    return Checkpoint(current.sequence, current.hash, at, token)


async def stored_checkpoint_tokens(conn: Connection) -> list[str]:
    return [row["token"] for row in await conn.fetch(STORED_TOKENS)]
