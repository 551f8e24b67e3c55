"""The ring of keys that sign receipts: the current Ed25519 private key and
the public keys of retired ones, each named by its RFC 7638 thumbprint.

Rotation: configure a new signing key and move the old one's public JWK to the
retired list. New receipts are signed with the new key; old ones still verify,
since every key of the ring is published in the JWKS. Any public key in the
retired list is published, so the next key can be announced before it signs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from joserfc import jwk
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet, OKPKey

from datapolis_shared.errors import DatapolisError

# The JWS algorithm of receipts: EdDSA over Ed25519 (RFC 8037), which every
# JOSE library knows. RFC 9864's fully-specified "Ed25519" is newer than
# most verifiers.
RECEIPT_ALGORITHM = "EdDSA"


@contextmanager
def eddsa_accepted() -> Iterator[None]:
    """Sign or verify with "EdDSA" without joserfc's warning that RFC 9864
    deprecates it: the platform uses it on purpose (see RECEIPT_ALGORITHM)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=SecurityWarning, message="EdDSA")
        yield


class InvalidSigningKey(DatapolisError):
    """A configured receipt key cannot be used (raised at start)."""

    code = "invalid-signing-key"


def _import_ed25519(value: str | Mapping[str, Any], *, what: str) -> OKPKey:
    try:
        if isinstance(value, str):
            text = value.strip()
            data: Any = json.loads(text) if text.startswith("{") else text.encode()
        else:
            data = dict(value)
        if isinstance(data, dict) and data.get("kty") != "OKP":
            raise InvalidSigningKey(f"{what} is not an OKP key (kty {data.get('kty')!r})")
        key = OKPKey.import_key(data)
    # joserfc lets KeyError through for members it does not expect.
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise InvalidSigningKey(f"{what} is neither an Ed25519 PEM nor an OKP JWK") from error
    if key.curve_name != "Ed25519":
        raise InvalidSigningKey(f"{what} is on curve {key.curve_name}, not Ed25519")
    return key


def public_jwk(key: OKPKey) -> dict[str, Any]:
    """The key's public members only (never ``d``), named by its thumbprint."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": key.as_dict(private=False)["x"],
        "kid": key.thumbprint(),
        "use": "sig",
        "alg": RECEIPT_ALGORITHM,
    }


def key_set_from_jwks(document: Any) -> KeySet:
    """The keys of a JWK Set document (``{"keys": [...]}``); TypeError,
    ValueError, KeyError or a JoseError when it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TypeError("a JWK Set is an object with a list of keys")
    items = document["keys"]
    if not all(isinstance(item, dict) for item in items):
        raise TypeError("each key of a JWK Set is an object")
    return KeySet([jwk.import_key(item) for item in items])


@dataclass(frozen=True)
class KeyRing:
    """The current signing key and the public keys that verify receipts."""

    signing_key: OKPKey
    retired: tuple[OKPKey, ...] = ()

    @classmethod
    def load(cls, signing_key: str, retired: Iterable[Mapping[str, Any]] = ()) -> KeyRing:
        """``signing_key``: an Ed25519 private key as PEM (PKCS#8) or JWK text;
        ``retired``: public JWKs of earlier signing keys."""
        current = _import_ed25519(signing_key, what="the receipt signing key")
        if not current.is_private:
            raise InvalidSigningKey("the receipt signing key has no private part")
        kept: dict[str, OKPKey] = {}
        for index, retired_jwk in enumerate(retired):
            if "d" in retired_jwk:
                # A retired key only verifies; its private part must not linger
                # in the configuration, where it could sign again.
                raise InvalidSigningKey(f"retired receipt key {index} carries a private part")
            key = _import_ed25519(retired_jwk, what=f"retired receipt key {index}")
            if key.thumbprint() != current.thumbprint():
                kept[key.thumbprint()] = key
        return cls(signing_key=current, retired=tuple(kept.values()))

    @classmethod
    def generate(cls) -> KeyRing:
        return cls(signing_key=OKPKey.generate_key("Ed25519"))

    @property
    def kid(self) -> str:
        """The id of the current signing key: its RFC 7638 thumbprint."""
        return self.signing_key.thumbprint()

    def rotated(self, new_signing_key: OKPKey) -> KeyRing:
        """The ring after a rotation: ``new_signing_key`` signs, the current
        key joins the retired ones (public part only)."""
        retired_public = OKPKey.import_key(public_jwk(self.signing_key))
        return KeyRing(signing_key=new_signing_key, retired=(retired_public, *self.retired))

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The JWK Set published at /.well-known/jwks.json: public keys only,
        the current one first."""
        return {"keys": [public_jwk(key) for key in (self.signing_key, *self.retired)]}

    def verification_keys(self) -> KeySet:
        return key_set_from_jwks(self.jwks())
