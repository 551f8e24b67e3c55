"""The ledger's hash chain: what a row is, its canonical form and its hash.

Pure functions, nothing running. A row's hash is SHA-256 over the RFC 8785
(JSON Canonicalization Scheme) form of::

    {"actor": ..., "change": ..., "entity": {"id": ..., "kind": ...},
     "payload": {...}, "prev_hash": ..., "recorded_at": ..., "sequence": N}

``recorded_at`` is RFC 3339 in UTC with microseconds (PostgreSQL's
precision), ``prev_hash`` is the previous row's hash (64 zeros for the first
row), hashes are lower-case hex. Anyone can recompute a hash from the row with
any RFC 8785 implementation and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeAlias

import rfc8785

JsonValue: TypeAlias = "str | int | float | bool | None | list[JsonValue] | dict[str, JsonValue]"
Payload: TypeAlias = Mapping[str, JsonValue]
EntityKind = Literal["agreement", "consent"]

GENESIS_HASH = "0" * 64

# The life cycles the ledger records. A change outside them is a bug in the
# caller, refused before anything is written.
CHANGES: dict[str, frozenset[str]] = {
    "agreement": frozenset(
        {"requested", "granted", "amended", "refused", "revoked", "terminated", "expired"}
    ),
    "consent": frozenset({"granted", "withdrawn", "expired"}),
}

# JSON numbers are IEEE 754 doubles; RFC 8785 refuses integers beyond them.
_SAFE_INTEGER = 2**53 - 1


class LedgerError(Exception):
    """Base of the ledger's errors."""


class InvalidChange(LedgerError):
    """A change the ledger cannot record as given (unknown kind or change,
    a payload with no canonical JSON form)."""


@dataclass(frozen=True)
class LedgerEntry:
    sequence: int
    entity_kind: EntityKind
    entity_id: str
    change: str
    payload: Payload
    actor: str
    recorded_at: datetime
    prev_hash: str
    hash: str

    def recomputed_hash(self) -> str:
        return entry_hash(
            sequence=self.sequence,
            entity_kind=self.entity_kind,
            entity_id=self.entity_id,
            change=self.change,
            payload=self.payload,
            actor=self.actor,
            recorded_at=self.recorded_at,
            prev_hash=self.prev_hash,
        )


def format_instant(instant: datetime) -> str:
    """The one text form of a time in the ledger: ``2026-01-31T12:00:00.000000Z``."""
    if instant.tzinfo is None:
        raise InvalidChange("ledger times must carry a time zone")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_payload(payload: Payload) -> bytes:
    try:
        return rfc8785.dumps(dict(payload))
    except rfc8785.CanonicalizationError as exc:
        raise InvalidChange(f"the payload has no canonical JSON form: {exc}") from exc


# RFC 8785 writes a string as its UTF-8 between quotes, escaping only these.
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _string(value: str) -> bytes:
    if _NEEDS_ESCAPE.search(value) is None:
        try:
            return b'"' + value.encode() + b'"'
        except UnicodeEncodeError as exc:
            raise InvalidChange("a ledger string holds a lone surrogate") from exc
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidChange(f"a ledger string has no canonical JSON form: {exc}") from exc


def canonical_entry(
    *,
    sequence: int,
    entity_kind: str,
    entity_id: str,
    change: str,
    payload: Payload | bytes,
    actor: str,
    recorded_at: datetime,
    prev_hash: str,
) -> bytes:
    """The RFC 8785 form of a row. The envelope's keys are fixed and ASCII, so
    it is written here in their canonical order, and only the payload goes
    through the general canonicaliser: the same bytes as ``rfc8785.dumps`` of
    the whole document (a unit test holds them equal), at a third of the cost,
    which is what keeps verification of a long chain within its bound.
    ``payload`` may be given already canonical (bytes)."""
    if not 0 < sequence <= _SAFE_INTEGER:
        raise InvalidChange(f"sequence {sequence} is out of range")
    body = payload if isinstance(payload, bytes) else canonical_payload(payload)
    return b"".join(
        (
            b'{"actor":',
            _string(actor),
            b',"change":',
            _string(change),
            b',"entity":{"id":',
            _string(entity_id),
            b',"kind":',
            _string(entity_kind),
            b'},"payload":',
            body,
            b',"prev_hash":',
            _string(prev_hash),
            b',"recorded_at":',
            _string(format_instant(recorded_at)),
            b',"sequence":',
            str(sequence).encode(),
            b"}",
        )
    )


def entry_hash(
    *,
    sequence: int,
    entity_kind: str,
    entity_id: str,
    change: str,
    payload: Payload | bytes,
    actor: str,
    recorded_at: datetime,
    prev_hash: str,
) -> str:
    canonical = canonical_entry(
        sequence=sequence,
        entity_kind=entity_kind,
        entity_id=entity_id,
        change=change,
        payload=payload,
        actor=actor,
        recorded_at=recorded_at,
        prev_hash=prev_hash,
    )
    return hashlib.sha256(canonical).hexdigest()


def check_change(entity_kind: str, change: str) -> None:
    allowed = CHANGES.get(entity_kind)
    if allowed is None:
        raise InvalidChange(f"unknown entity kind {entity_kind!r}")
    if change not in allowed:
        raise InvalidChange(f"{change!r} is not a change of a {entity_kind}")


def _json_number(text: str) -> int | float:
    # JSONB keeps numbers as exact decimals and prints a float such as 1e20
    # as "100000000000000000000": read back, an integer beyond what a double
    # holds exactly can only have been a double (appends refuse such
    # integers), so it is read as one, which canonicalises as it did.
    value = int(text)
    return value if -_SAFE_INTEGER <= value <= _SAFE_INTEGER else float(text)


def decode_payload(text: str) -> Payload:
    """A payload as PostgreSQL's JSONB prints it, back to the value hashed."""
    value = json.loads(text, parse_int=_json_number)
    if not isinstance(value, dict):
        raise InvalidChange("a ledger payload is a JSON object")
    return value


# Keys with characters from U+E000 up may sort one way by code point (as
# Python sorts) and another by UTF-16 code unit (as RFC 8785 sorts); an
# escape (\uE000, \uD83D...) may stand for one.
_SORTS_APART = re.compile("[\ue000-\U0010ffff]|\\\\u[d-fD-F]")


def canonical_stored_payload(text: str) -> bytes:
    """The canonical form of a payload as JSONB prints it: verification's hot
    path. Python's compact, key-sorted JSON is RFC 8785's form, character for
    character, as long as every key sorts alike both ways and every number
    prints alike: integers within a double's exact range, and doubles that
    Python writes without an exponent or a trailing ".0" (shortest round-trip
    digits, as ECMAScript writes them). Anything else goes through the
    general canonicaliser. Unit and PostgreSQL tests hold both paths equal."""
    exact = True

    def number(digits: str) -> int | float:
        nonlocal exact
        value = int(digits)
        if -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
            return value
        exact = False
        return float(digits)

    def fraction(digits: str) -> float:
        nonlocal exact
        value = float(digits)
        written = repr(value)
        if "e" in written or written.endswith(".0") or not math.isfinite(value):
            exact = False
        return value

    value = json.loads(text, parse_int=number, parse_float=fraction)
    if not isinstance(value, dict):
        raise InvalidChange("a ledger payload is a JSON object")
    if exact and _SORTS_APART.search(text) is None:
        try:
            return json.dumps(
                value, ensure_ascii=False, separators=(",", ":"), sort_keys=True
            ).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: the canonicaliser refuses it below
    return canonical_payload(value)
