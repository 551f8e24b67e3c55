"""The ledger's canonical form and hashes: what anyone recomputing a row's
hash with an RFC 8785 library and SHA-256 must get."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785

from datapolis_consent.ledger import GENESIS_HASH, InvalidChange, canonical_entry, entry_hash
from datapolis_consent.ledger.chain import (
    canonical_stored_payload,
    check_change,
    decode_payload,
    format_instant,
)
from datapolis_consent.ledger.checkpoints import (
    InvalidCheckpoint,
    checkpoint_payload,
    open_checkpoint,
)
from tests.hmac_signer import HmacSigner
from tests.json_samples import random_object

AT = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


@dataclasses.dataclass
class Row:
    sequence: int = 7
    entity_kind: str = "agreement"
    entity_id: str = "agr-1"
    change: str = "granted"
    payload: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"fields": ["kwh", "meter_id"], "period": {"end": "2027-01-01"}}
    )
    actor: str = "org:metropole"
    recorded_at: datetime = AT
    prev_hash: str = GENESIS_HASH


def document(row: Row) -> dict[str, Any]:
    """The hashed document, as the README describes it."""
    return {
        "sequence": row.sequence,
        "entity": {"kind": row.entity_kind, "id": row.entity_id},
        "change": row.change,
        "payload": row.payload,
        "actor": row.actor,
        "recorded_at": format_instant(row.recorded_at),
        "prev_hash": row.prev_hash,
    }


PAYLOADS: list[dict[str, Any]] = [
    {},
    {"fields": ["kwh"], "purpose": "dpv:ScientificResearch", "reason": None, "final": True},
    {"é": "ünïcødé ✓", "a\u0000b": "tab\there", "quote": '"\\', "\u20ac": 1, "\U0001f600": 2},
    {"n": 1.5, "big": 1e20, "tiny": 1.5e-7, "neg": -0.0, "int": 2**53 - 1, "whole": 3.0},
    {"nested": {"z": [1, {"b": 2, "a": [None, False]}], "a": {}}},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_canonical_form_is_rfc8785_of_the_documented_document(
    payload: dict[str, Any],
) -> None:
    row = Row(payload=payload, entity_id='agr-é\n"\\\x1f', actor="subject:\u2028x\U0001f600")
    expected = rfc8785.dumps(document(row))
    assert canonical_entry(**dataclasses.asdict(row)) == expected
    assert entry_hash(**dataclasses.asdict(row)) == hashlib.sha256(expected).hexdigest()


def test_a_known_row_has_a_known_hash() -> None:
    # Pinned: a change here breaks every ledger already written.
    canonical = canonical_entry(**dataclasses.asdict(Row()))
    assert canonical == (
        b'{"actor":"org:metropole","change":"granted","entity":{"id":"agr-1","kind":"agreement"},'
        b'"payload":{"fields":["kwh","meter_id"],"period":{"end":"2027-01-01"}},'
        b'"prev_hash":"' + GENESIS_HASH.encode() + b'",'
        b'"recorded_at":"2026-03-01T12:30:05.123456Z","sequence":7}'
    )
    assert entry_hash(**dataclasses.asdict(Row())) == hashlib.sha256(canonical).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        {"sequence": 8},
        {"entity_kind": "consent"},
        {"entity_id": "agr-2"},
        {"change": "amended"},
        {"payload": {"fields": ["kwh"], "period": {"end": "2027-01-01"}}},
        {"actor": "org:other"},
        {"recorded_at": AT + timedelta(microseconds=1)},
        {"prev_hash": "1" * 64},
    ],
)
def test_every_part_of_a_row_is_covered_by_its_hash(change: dict[str, Any]) -> None:
    original = entry_hash(**dataclasses.asdict(Row()))
    assert entry_hash(**dataclasses.asdict(dataclasses.replace(Row(), **change))) != original


def test_key_order_and_time_zone_do_not_change_the_hash() -> None:
    row = Row(payload={"b": 1, "a": {"y": 2, "x": 1}})
    same = Row(
        payload={"a": {"x": 1, "y": 2}, "b": 1.0},
        recorded_at=AT.astimezone(timezone(timedelta(hours=2))),
    )
    assert entry_hash(**dataclasses.asdict(row)) == entry_hash(**dataclasses.asdict(same))


@pytest.mark.parametrize(
    "payload", [{"n": float("nan")}, {"n": float("inf")}, {"n": 2**53}, {1: "x"}, {"s": "\ud800"}]
)
def test_a_payload_without_a_canonical_form_is_refused(payload: dict[Any, Any]) -> None:
    with pytest.raises(InvalidChange):
        entry_hash(**dataclasses.asdict(Row(payload=payload)))


def test_a_string_without_a_canonical_form_is_refused() -> None:
    with pytest.raises(InvalidChange):
        entry_hash(**dataclasses.asdict(Row(actor="org:\ud800")))


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(InvalidChange):
        format_instant(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("kind", "change"), [("agreement", "withdrawn"), ("consent", "amended"), ("dataset", "x")]
)
def test_changes_outside_the_life_cycles_are_refused(kind: str, change: str) -> None:
    with pytest.raises(InvalidChange):
        check_change(kind, change)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_payload_read_back_from_jsonb_hashes_as_it_did(payload: dict[str, Any]) -> None:
    # JSONB prints numbers as exact decimals: 1e20 comes back as
    # "100000000000000000000", 1.5e-7 as "0.00000015".
    as_jsonb = json.dumps(payload).replace("1e+20", "100000000000000000000")
    as_jsonb = as_jsonb.replace("1.5e-07", "0.00000015")
    assert rfc8785.dumps(decode_payload(as_jsonb)) == rfc8785.dumps(payload)


def test_a_checkpoint_opens_only_with_a_valid_signature() -> None:
    signer = HmacSigner()
    token = signer.sign(checkpoint_payload(42, "a" * 64, AT))
    opened = open_checkpoint(token, signer)
    assert (opened.sequence, opened.hash, opened.checkpointed_at) == (42, "a" * 64, AT)
    with pytest.raises(InvalidCheckpoint):
        open_checkpoint(token, HmacSigner(b"another key"))
    forged = signer.sign(b'{"hash":"' + b"a" * 64 + b'","sequence":42}')
    with pytest.raises(InvalidCheckpoint, match="not a ledger checkpoint"):
        open_checkpoint(forged, signer)


def test_the_fast_canonical_form_of_stored_payloads_is_rfc8785() -> None:
    rng = random.Random(8785)
    for _ in range(3000):
        payload = random_object(rng)
        expected = rfc8785.dumps(payload)
        assert canonical_stored_payload(json.dumps(payload)) == expected, payload
        assert canonical_stored_payload(json.dumps(payload, ensure_ascii=False)) == expected
