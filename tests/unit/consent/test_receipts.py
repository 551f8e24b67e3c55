"""Receipts are JWS signed with EdDSA that anyone verifies with the published
JWK Set, using any JOSE library; a receipt altered in any way is refused, and
receipts signed before a key rotation still verify after it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey
from pydantic import ValidationError

from datapolis_consent.keys import InvalidSigningKey, KeyRing, public_jwk
from datapolis_consent.receipts import (
    Event,
    InvalidReceipt,
    Parties,
    Party,
    Period,
    Processing,
    Receipt,
    UnknownReceiptKey,
    Withdrawal,
    build_receipt,
    verify_receipt,
)
from datapolis_consent.settings import DEV_RECEIPT_SIGNING_KEY, ConsentSettings

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
LEDGER_HASH = "9f" * 32


def _receipt_token(keys: KeyRing, *, record_id: str = "agr-1", subject: str | None = None) -> str:
    return build_receipt(
        keys=keys,
        issuer="https://consent.datapolis.example",
        record_kind="consent" if subject else "agreement",
        record_id=record_id,
        event=Event(type="granted", time=NOW, ledger_sequence=42, ledger_hash=LEDGER_HASH),
        processing=Processing(
            dataset="household-energy",
            fields=("meter_id", "kwh"),
            purposes=("dpv:ScientificResearch",),
            period=Period(start=NOW, end=NOW + timedelta(days=90)),
        ),
        parties=Parties(
            controller=Party(id="org-publisher", name="Régie de l'énergie"),
            consumer=Party(id="org-lab", name="Laboratoire"),
            data_subject=subject,
        ),
        withdrawal=Withdrawal(
            url=f"https://consent.datapolis.example/agreements/{record_id}/revoke",
            method="POST",
        ),
    )


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _pyjwt_verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Verify as a third party would: PyJWT, the published set, the key the
    receipt's header names."""
    kid = pyjwt.get_unverified_header(token)["kid"]
    key_set = pyjwt.PyJWKSet.from_dict(jwks)
    key = next(k for k in key_set.keys if k.key_id == kid)
    decoded = pyjwt.api_jws.PyJWS().decode_complete(token, key.key, algorithms=["EdDSA"])
    payload: dict[str, Any] = json.loads(decoded["payload"])
    return payload


def test_a_receipt_verifies_with_the_published_keys_in_another_jose_library() -> None:
    keys = KeyRing.generate()
    token = _receipt_token(keys, subject="sub-7f3a")

    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == keys.kid
    payload = _pyjwt_verify(token, keys.jwks())
    # ISO/IEC TS 27560's four parts, with Kantara's names inside.
    assert set(payload) == {"header", "processing", "parties", "event", "withdrawal"}
    assert payload["processing"]["dataset"] == "household-energy"
    assert payload["processing"]["fields"] == ["meter_id", "kwh"]
    assert payload["processing"]["purposes"] == ["dpv:ScientificResearch"]
    assert payload["parties"]["controller"]["id"] == "org-publisher"
    assert payload["parties"]["consumer"]["id"] == "org-lab"
    assert payload["parties"]["data_subject"] == "sub-7f3a"
    assert payload["event"] == {
        "type": "granted",
        "time": "2026-12-02T09:30:00Z",
        "ledger_sequence": 42,
        "ledger_hash": LEDGER_HASH,
    }
    assert payload["withdrawal"]["method"] == "POST"
    assert payload["header"]["record_kind"] == "consent"
    # And the platform reads back exactly what it signed.
    assert verify_receipt(token, keys.jwks()) == Receipt.model_validate(payload)


def test_an_agreement_receipt_names_no_data_subject() -> None:
    keys = KeyRing.generate()
    payload = _pyjwt_verify(_receipt_token(keys), keys.jwks())
    assert "data_subject" not in payload["parties"]
    assert payload["header"]["record_kind"] == "agreement"


def _payload_byte_changed(token: str) -> str:
    header, payload, signature = _segments(token)
    altered = _unb64(payload).replace(b'"ledger_sequence":42', b'"ledger_sequence":43')
    assert altered != _unb64(payload)
    return ".".join([header, _b64(altered), signature])


def _signature_swapped(token: str, other: str) -> str:
    header, payload, _ = _segments(token)
    return ".".join([header, payload, _segments(other)[2]])


def test_a_tampered_receipt_is_refused_by_both_libraries() -> None:
    keys = KeyRing.generate()
    token = _receipt_token(keys)
    other = _receipt_token(keys, record_id="agr-2")
    jwks = keys.jwks()
    for tampered in (_payload_byte_changed(token), _signature_swapped(token, other)):
        with pytest.raises(InvalidReceipt):
            verify_receipt(tampered, jwks)
        with pytest.raises(pyjwt.InvalidSignatureError):
            _pyjwt_verify(tampered, jwks)
    assert verify_receipt(token, jwks).header.record_id == "agr-1"


def test_a_receipt_signed_by_an_unpublished_key_is_refused() -> None:
    published = KeyRing.generate()
    stranger = KeyRing.generate()
    forged = _receipt_token(stranger)
    with pytest.raises(UnknownReceiptKey) as refused:
        verify_receipt(forged, published.jwks())
    assert refused.value.code == "unknown-receipt-key"

    # The stranger's signature under a published kid does not verify either.
    header = json.loads(_unb64(_segments(forged)[0]))
    relabelled = _b64(json.dumps({**header, "kid": published.kid}).encode())
    _, payload, signature = _segments(forged)
    with pytest.raises(InvalidReceipt) as bad:
        verify_receipt(".".join([relabelled, payload, signature]), published.jwks())
    assert bad.value.code == "invalid-receipt"


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_a_receipt_claiming_another_algorithm_is_refused(alg: str) -> None:
    keys = KeyRing.generate()
    header, payload, signature = _segments(_receipt_token(keys))
    claimed = _b64(json.dumps({**json.loads(_unb64(header)), "alg": alg}).encode())
    with pytest.raises(InvalidReceipt):
        verify_receipt(".".join([claimed, payload, "" if alg == "none" else signature]), keys)


@pytest.mark.parametrize("token", ["", "a.b", "not.a.jws", "a.b.c.d"])
def test_something_that_is_no_receipt_is_refused(token: str) -> None:
    with pytest.raises(InvalidReceipt):
        verify_receipt(token, KeyRing.generate())


def test_a_receipt_signed_before_a_rotation_verifies_after_it() -> None:
    before = KeyRing.generate()
    old_receipt = _receipt_token(before, record_id="agr-old")

    after = before.rotated(OKPKey.generate_key("Ed25519"))
    new_receipt = _receipt_token(after, record_id="agr-new")

    assert after.kid != before.kid
    assert pyjwt.get_unverified_header(new_receipt)["kid"] == after.kid
    published = after.jwks()
    assert [key["kid"] for key in published["keys"]] == [after.kid, before.kid]
    for token, record_id in ((old_receipt, "agr-old"), (new_receipt, "agr-new")):
        assert verify_receipt(token, published).header.record_id == record_id
        assert _pyjwt_verify(token, published)["header"]["record_id"] == record_id
    # Before the rotation, nobody could verify with the key of after it.
    with pytest.raises(UnknownReceiptKey):
        verify_receipt(new_receipt, before.jwks())


def test_a_rotation_by_configuration_keeps_the_published_keys_as_retired() -> None:
    """The operator's rotation: a new signing key, and the JWK Set served
    until then as the retired keys (the current key repeated there is fine)."""
    before = KeyRing.load(DEV_RECEIPT_SIGNING_KEY)
    old_receipt = _receipt_token(before)
    new_pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    after = KeyRing.load(new_pem, before.jwks()["keys"])
    assert [key["kid"] for key in after.jwks()["keys"]] == [after.kid, before.kid]
    assert verify_receipt(old_receipt, after.jwks()).header.record_id == "agr-1"
    # Republishing the current key among the retired does not list it twice.
    again = KeyRing.load(new_pem, after.jwks()["keys"])
    assert again.jwks() == after.jwks()


def test_the_published_keys_hold_no_private_part() -> None:
    keys = KeyRing.generate().rotated(OKPKey.generate_key("Ed25519"))
    for key in keys.jwks()["keys"]:
        assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}


def test_a_key_id_is_its_rfc7638_thumbprint() -> None:
    # RFC 8037, appendix A.3: the thumbprint of the example Ed25519 key.
    example = OKPKey.import_key(
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    )
    assert public_jwk(example)["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_a_signing_key_loads_from_a_pem_or_a_jwk_alike() -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    as_jwk = json.dumps(OKPKey.import_key(pem.encode()).as_dict(private=True))
    assert KeyRing.load(pem).kid == KeyRing.load(as_jwk).kid


@pytest.mark.parametrize(
    ("signing_key", "retired"),
    [
        ("not a key", []),
        # A public key cannot sign.
        (json.dumps(public_jwk(OKPKey.generate_key("Ed25519"))), []),
        # An X25519 key is an OKP key, but not one that signs.
        (json.dumps(OKPKey.generate_key("X25519").as_dict(private=True)), []),
        # A retired key keeps no private part.
        (DEV_RECEIPT_SIGNING_KEY, [OKPKey.generate_key("Ed25519").as_dict(private=True)]),
        (DEV_RECEIPT_SIGNING_KEY, [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]),
    ],
)
def test_an_unusable_key_is_refused(signing_key: str, retired: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidSigningKey):
        KeyRing.load(signing_key, retired)


def test_the_development_signing_key_is_refused_outside_development() -> None:
    production: dict[str, Any] = {
        "operator_key": "dpk_operator_" + "x" * 40,
        "postgres": {"dsn": "postgresql://consent:s3cret@db:5432/datapolis"},
    }
    with pytest.raises(ValidationError, match=r"receipts\.signing_key"):
        ConsentSettings.model_validate(production)
    own_key = json.dumps(OKPKey.generate_key("Ed25519").as_dict(private=True))
    settings = ConsentSettings.model_validate({**production, "receipts": {"signing_key": own_key}})
    assert KeyRing.load(settings.receipts.signing_key.get_secret_value()).kid
    assert ConsentSettings(dev=True).receipts.signing_key.get_secret_value() == (
        DEV_RECEIPT_SIGNING_KEY
    )


def test_a_receipt_is_immutable_and_its_period_ends_after_it_starts() -> None:
    with pytest.raises(ValidationError):
        Period(start=NOW, end=NOW)
    event = Event(type="revoked", time=NOW, ledger_sequence=1, ledger_hash=LEDGER_HASH)
    with pytest.raises(ValidationError):
        event.ledger_sequence = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Event(type="revoked", time=NOW, ledger_sequence=1, ledger_hash="not-a-sha256")
    with pytest.raises(ValidationError):
        # A time without its offset is ambiguous.
        naive = datetime(2026, 1, 1)
        Event(type="revoked", time=naive, ledger_sequence=1, ledger_hash=LEDGER_HASH)


def test_a_key_announced_before_it_signs_is_published_throughout_the_rotation() -> None:
    """Two steps, so that no replica signs with a key another does not serve:
    announce the next key among the retired, then make it the signing key."""
    old = OKPKey.generate_key("Ed25519")
    new = OKPKey.generate_key("Ed25519")
    serving = KeyRing.load(json.dumps(old.as_dict(private=True)))
    announced = KeyRing.load(
        json.dumps(old.as_dict(private=True)), [*serving.jwks()["keys"], public_jwk(new)]
    )
    assert announced.kid == old.thumbprint()
    switched = KeyRing.load(json.dumps(new.as_dict(private=True)), announced.jwks()["keys"])
    assert switched.kid == new.thumbprint()
    # During either restart, whichever replica signs, every replica that is
    # up to date with the step before publishes its key.
    kids = {k["kid"] for k in announced.jwks()["keys"]}
    assert kids == {k["kid"] for k in switched.jwks()["keys"]}
    assert verify_receipt(_receipt_token(switched), announced.jwks()).header.record_id == "agr-1"
    assert verify_receipt(_receipt_token(announced), switched.jwks()).header.record_id == "agr-1"
