"""The platform's checkpoint signer: a compact JWS (EdDSA over Ed25519)
signed with the receipt key ring's current key, so a checkpoint verifies with
the keys published at /.well-known/jwks.json, with any JOSE library, and an
old checkpoint still verifies after the keys rotate."""

from __future__ import annotations

from joserfc import jws
from joserfc.errors import JoseError

from datapolis_consent.keys import RECEIPT_ALGORITHM, KeyRing, eddsa_accepted
from datapolis_consent.ledger.checkpoints import InvalidSignature

# The media type of the payload, in the protected header's `cty`.
CHECKPOINT_CONTENT_TYPE = "ledger-checkpoint+json"


class KeyRingSigner:
    """The ledger's :class:`~datapolis_consent.ledger.checkpoints.Signer` over a key ring."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    def sign(self, payload: bytes) -> str:
        header = {"alg": RECEIPT_ALGORITHM, "kid": self._keys.kid, "cty": CHECKPOINT_CONTENT_TYPE}
        with eddsa_accepted():
            return jws.serialize_compact(
                header, payload, self._keys.signing_key, algorithms=[RECEIPT_ALGORITHM]
            )

    def verify(self, token: str) -> bytes:
        try:
            with eddsa_accepted():
                verified = jws.deserialize_compact(
                    token, self._keys.verification_keys(), algorithms=[RECEIPT_ALGORITHM]
                )
        except (JoseError, ValueError) as error:
            raise InvalidSignature("not signed by a key of the platform's ring") from error
        if verified.protected.get("cty") != CHECKPOINT_CONTENT_TYPE:
            raise InvalidSignature("the token is not a ledger checkpoint")
        return verified.payload or b""
