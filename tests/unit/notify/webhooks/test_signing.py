"""Standard Webhooks signatures, checked by verifiers notify does not own:
the reference ``standardwebhooks`` package for v1, PyNaCl for v1a."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from datapolis_notify.ports import SigningKey
from datapolis_notify.webhooks.signing import (
    InvalidSigningKey,
    new_v1_secret,
    new_v1a_key_pair,
    public_key_of,
    sign,
    signature_headers,
)

BODY = b'{"type":"record.batch","data":[{"id":1,"name":"\xc3\xa9t\xc3\xa9"}]}'


def _now() -> datetime:
    # The reference verifier refuses timestamps more than 5 min from its clock.
    return datetime.now(UTC)


def _v1a_verifies(public_key: str, headers: dict[str, str], body: bytes) -> bool:
    """An independent Ed25519 check (libsodium through PyNaCl)."""
    verify_key = VerifyKey(base64.b64decode(public_key.removeprefix("whpk_")))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for entry in headers["webhook-signature"].split(" "):
        version, signature = entry.split(",", 1)
        if version != "v1a":
            continue
        try:
            verify_key.verify(content, base64.b64decode(signature))
            return True
        except BadSignatureError:
            continue
    return False


def test_new_secrets_have_the_spec_form() -> None:
    secret = new_v1_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    private, public = new_v1a_key_pair()
    assert private.startswith("whsk_")
    assert public.startswith("whpk_")
    assert len(base64.b64decode(private.removeprefix("whsk_"))) == 32
    assert len(base64.b64decode(public.removeprefix("whpk_"))) == 32
    assert public_key_of(private) == public
    assert new_v1_secret() != secret


def test_reference_verifier_accepts_v1() -> None:
    secret = new_v1_secret()
    headers = signature_headers(
        (SigningKey("s1", "v1", secret),), message_id="msg_1", body=BODY, now=_now()
    )
    assert headers["webhook-signature"].startswith("v1,")
    Webhook(secret).verify(BODY, headers, json_parse=False)


def test_reference_verifier_refuses_a_tampered_body_timestamp_or_id() -> None:
    secret = new_v1_secret()
    now = _now()
    headers = signature_headers(
        (SigningKey("s1", "v1", secret),), message_id="msg_1", body=BODY, now=now
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"1", b"2"), headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        moved = {**headers, "webhook-timestamp": str(int(now.timestamp()) - 1)}
        Webhook(secret).verify(BODY, moved, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_2"}, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_v1_secret()).verify(BODY, headers, json_parse=False)


def test_independent_ed25519_accepts_v1a_and_refuses_tampering() -> None:
    private, public = new_v1a_key_pair()
    headers = signature_headers(
        (SigningKey("k1", "v1a", private),), message_id="msg_1", body=BODY, now=_now()
    )
    assert headers["webhook-signature"].startswith("v1a,")
    assert _v1a_verifies(public, headers, BODY)
    assert not _v1a_verifies(public, headers, BODY + b" ")
    assert not _v1a_verifies(public, {**headers, "webhook-timestamp": "1"}, BODY)
    assert not _v1a_verifies(new_v1a_key_pair()[1], headers, BODY)


def test_rotation_overlap_each_receiver_accepts_with_its_own_key() -> None:
    """During a rotation both keys sign; a receiver still on the old key and
    one already on the new key both accept the same request."""
    old_secret, new_secret = new_v1_secret(), new_v1_secret()
    old_private, old_public = new_v1a_key_pair()
    new_private, new_public = new_v1a_key_pair()
    keys = (
        SigningKey("old", "v1", old_secret),
        SigningKey("new", "v1", new_secret),
        SigningKey("old-a", "v1a", old_private),
        SigningKey("new-a", "v1a", new_private),
    )
    headers = signature_headers(keys, message_id="msg_rot", body=BODY, now=_now())
    assert len(headers["webhook-signature"].split(" ")) == 4
    Webhook(old_secret).verify(BODY, headers, json_parse=False)
    Webhook(new_secret).verify(BODY, headers, json_parse=False)
    assert _v1a_verifies(old_public, headers, BODY)
    assert _v1a_verifies(new_public, headers, BODY)


def test_timestamp_is_the_attempts_unix_seconds_and_id_kept() -> None:
    secret = new_v1_secret()
    at = datetime(2026, 1, 2, 3, 4, 5, 900_000, tzinfo=UTC)
    headers = signature_headers(
        (SigningKey("s", "v1", secret),), message_id="msg_x", body=b"{}", now=at
    )
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert headers["webhook-id"] == "msg_x"


def test_a_libsodium_64_byte_private_key_signs_like_its_seed() -> None:
    private, public = new_v1a_key_pair()
    seed = base64.b64decode(private.removeprefix("whsk_"))
    long_form = "whsk_" + base64.b64encode(seed + base64.b64decode(public[5:])).decode()
    headers = signature_headers(
        (SigningKey("k", "v1a", long_form),), message_id="m", body=BODY, now=_now()
    )
    assert _v1a_verifies(public, headers, BODY)


@pytest.mark.parametrize(
    "key",
    [
        SigningKey("s", "v1", "whsk_" + base64.b64encode(b"x" * 32).decode()),
        SigningKey("s", "v1", "whsec_" + base64.b64encode(b"short").decode()),
        SigningKey("s", "v1", "whsec_not base64!"),
        SigningKey("s", "v1a", "whsk_" + base64.b64encode(b"x" * 31).decode()),
        SigningKey("s", "v1a", new_v1_secret()),
    ],
)
def test_malformed_keys_are_refused(key: SigningKey) -> None:
    with pytest.raises(InvalidSigningKey):
        signature_headers((key,), message_id="m", body=b"{}", now=_now())


def test_no_key_or_a_dotted_id_is_refused() -> None:
    with pytest.raises(InvalidSigningKey):
        signature_headers((), message_id="m", body=b"{}", now=_now())
    with pytest.raises(ValueError, match=r"no '\.'"):
        signature_headers(
            (SigningKey("s", "v1", new_v1_secret()),), message_id="a.1", body=b"", now=_now()
        )


def test_v1a_keys_are_the_raw_rfc_8032_seed_and_public_key() -> None:
    """RFC 8032, section 7.1, test 1: pins what whsk_ and whpk_ carry."""
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    private_key = "whsk_" + base64.b64encode(seed).decode()
    assert public_key_of(private_key) == "whpk_" + base64.b64encode(public).decode()
    assert sign(SigningKey("k", "v1a", private_key), b"") == (
        "v1a," + base64.b64encode(signature).decode()
    )
