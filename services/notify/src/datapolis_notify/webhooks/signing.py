"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec 1.0.0).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, the
timestamp being integer Unix seconds. Two schemes:

- ``v1``: HMAC-SHA256 with the bytes of a ``whsec_<base64>`` secret
  (24 to 64 random bytes; 32 here); header value ``v1,<base64 MAC>``.
- ``v1a``: Ed25519. The private key is ``whsk_<base64>`` of the 32-byte
  RFC 8032 seed, the public key ``whpk_<base64>`` of the 32-byte raw public
  key; header value ``v1a,<base64 64-byte signature>``. A 64-byte
  ``whsk_`` (libsodium's seed followed by the public key) is read too.

During a rotation's overlap a message is signed with every key, the
signatures space-separated in one ``webhook-signature`` header, so a
receiver holding either key accepts it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from datapolis_notify.ports import SigningKey

V1_PREFIX = "whsec_"
V1A_PRIVATE_PREFIX = "whsk_"
V1A_PUBLIC_PREFIX = "whpk_"
# The spec asks for at least 24 bytes (192 bits) and at most 64.
V1_SECRET_BYTES = 32
_ED25519_SEED_BYTES = 32


class InvalidSigningKey(ValueError):
    """A stored key is not of its scheme's form: a bug or corrupt data, never
    a target's doing."""


def new_v1_secret() -> str:
    """A fresh HMAC secret, ``whsec_<base64 of 32 random bytes>``."""
    return V1_PREFIX + base64.b64encode(secrets.token_bytes(V1_SECRET_BYTES)).decode("ascii")


def new_v1a_key_pair() -> tuple[str, str]:
    """A fresh Ed25519 key pair: (``whsk_...`` private, ``whpk_...`` public)."""
    seed = secrets.token_bytes(_ED25519_SEED_BYTES)
    private_key = V1A_PRIVATE_PREFIX + base64.b64encode(seed).decode("ascii")
    return private_key, public_key_of(private_key)


def public_key_of(private_key: str) -> str:
    """The ``whpk_`` public key that verifies signatures of a ``whsk_`` key."""
    raw = _ed25519_key(private_key).public_key().public_bytes_raw()
    return V1A_PUBLIC_PREFIX + base64.b64encode(raw).decode("ascii")


def signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    # A '.' in the id would let one (id, timestamp) pair pass for another.
    if "." in message_id or not message_id:
        raise ValueError("a webhook id is non-empty and has no '.'")
    return f"{message_id}.{timestamp}.".encode() + body


def sign(key: SigningKey, content: bytes) -> str:
    """One ``webhook-signature`` entry: ``v1,<b64>`` or ``v1a,<b64>``."""
    if key.scheme == "v1":
        mac = hmac.new(_v1_secret(key.secret), content, hashlib.sha256).digest()
        return "v1," + base64.b64encode(mac).decode("ascii")
    signature = _ed25519_key(key.secret).sign(content)
    return "v1a," + base64.b64encode(signature).decode("ascii")


def signature_headers(
    keys: tuple[SigningKey, ...], *, message_id: str, body: bytes, now: datetime
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt of a message.

    ``now`` is the attempt's time: a retry gets a new timestamp (receivers
    refuse old ones against replay) and keeps its id (their idempotency key).
    """
    if not keys:
        raise InvalidSigningKey("a webhook is signed with at least one key")
    timestamp = int(now.timestamp())
    content = signed_content(message_id, timestamp, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, content) for key in keys),
    }


def _b64(value: str, prefix: str) -> bytes:
    if not value.startswith(prefix):
        raise InvalidSigningKey(f"expected a key starting with {prefix!r}")
    encoded = value[len(prefix) :]
    try:
        # Unpadded base64 is accepted, as the reference verifier does.
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidSigningKey(f"a {prefix} key is not base64") from error


def _v1_secret(secret: str) -> bytes:
    raw = _b64(secret, V1_PREFIX)
    if not 24 <= len(raw) <= 64:
        raise InvalidSigningKey("a whsec_ secret has 24 to 64 bytes")
    return raw


def _ed25519_key(private_key: str) -> Ed25519PrivateKey:
    raw = _b64(private_key, V1A_PRIVATE_PREFIX)
    if len(raw) not in (_ED25519_SEED_BYTES, 2 * _ED25519_SEED_BYTES):
        raise InvalidSigningKey("a whsk_ key has 32 bytes (or 64: seed and public key)")
    return Ed25519PrivateKey.from_private_bytes(raw[:_ED25519_SEED_BYTES])
