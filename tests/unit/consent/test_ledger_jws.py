"""Checkpoints signed with the platform's key ring (EdDSA JWS): verifiable
with the published JWKS by another JOSE library, valid across rotations,
and never confused with a receipt."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jwt
import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from datapolis_consent.keys import KeyRing, eddsa_accepted
from datapolis_consent.ledger import InvalidCheckpoint, InvalidSignature, open_checkpoint
from datapolis_consent.ledger.checkpoints import checkpoint_payload
from datapolis_consent.ledger.jws import KeyRingSigner

AT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def test_a_checkpoint_verifies_with_the_published_keys_in_another_library() -> None:
    ring = KeyRing.generate()
    token = KeyRingSigner(ring).sign(checkpoint_payload(7, "b" * 64, AT))
    published = ring.jwks()["keys"][0]
    key = jwt.PyJWK.from_dict(published)
    payload = jwt.api_jws.decode_complete(token, key.key, algorithms=["EdDSA"])["payload"]
    assert json.loads(payload)["sequence"] == 7
    assert jwt.get_unverified_header(token)["kid"] == published["kid"]


def test_an_old_checkpoint_still_verifies_after_a_rotation() -> None:
    ring = KeyRing.generate()
    token = KeyRingSigner(ring).sign(checkpoint_payload(7, "b" * 64, AT))
    rotated = ring.rotated(OKPKey.generate_key("Ed25519"))
    opened = open_checkpoint(token, KeyRingSigner(rotated))
    assert (opened.sequence, opened.hash) == (7, "b" * 64)


def test_a_checkpoint_from_other_keys_or_tampered_is_refused() -> None:
    ring = KeyRing.generate()
    token = KeyRingSigner(KeyRing.generate()).sign(checkpoint_payload(7, "b" * 64, AT))
    with pytest.raises(InvalidCheckpoint):
        open_checkpoint(token, KeyRingSigner(ring))
    genuine = KeyRingSigner(ring).sign(checkpoint_payload(7, "b" * 64, AT))
    header, _, signature = genuine.split(".")
    forged_payload = KeyRingSigner(ring).sign(checkpoint_payload(8, "b" * 64, AT)).split(".")[1]
    with pytest.raises(InvalidSignature):
        KeyRingSigner(ring).verify(f"{header}.{forged_payload}.{signature}")


def test_something_else_the_ring_signs_is_no_checkpoint() -> None:
    ring = KeyRing.generate()
    other = KeyRingSigner(ring)
    # A receipt's content type, with a checkpoint-looking payload.
    with eddsa_accepted():
        token = jws.serialize_compact(
            {"alg": "EdDSA", "kid": ring.kid, "cty": "consent-receipt+json"},
            checkpoint_payload(7, "b" * 64, AT),
            ring.signing_key,
            algorithms=["EdDSA"],
        )
    with pytest.raises(InvalidSignature, match="not a ledger checkpoint"):
        other.verify(token)
