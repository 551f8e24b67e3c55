"""A signer for tests of the ledger's checkpoints: HMAC-SHA256 behind the
ledger's Signer protocol. Tests only: an HMAC proves nothing to a party that
does not hold the secret; the platform signs with its Ed25519 keys."""

from __future__ import annotations

import base64
import hashlib
import hmac

from datapolis_consent.ledger import InvalidSignature


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HmacSigner:
    def __init__(self, secret: bytes = b"test-only-secret") -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def sign(self, payload: bytes) -> str:
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str) -> bytes:
        try:
            encoded, mac = token.split(".")
            payload = _unb64(encoded)
            valid = hmac.compare_digest(_unb64(mac), self._mac(payload))
        except ValueError as exc:
            raise InvalidSignature("malformed token") from exc
        if not valid:
            raise InvalidSignature("the signature does not match")
        return payload
