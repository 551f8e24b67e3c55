"""Signed receipts: what was agreed or consented, by whom, and the ledger row
that recorded it, as a JWS (compact serialization) signed with EdDSA.

The payload follows the four parts of ISO/IEC TS 27560 (consent record
information structure): ``header``, ``processing``, ``parties`` and ``event``.
Where the Kantara Consent Receipt (v1.1) has a name for a member, the receipt
uses it in snake case: ``controller`` (Kantara's PII controller, here the
publisher), ``consumer`` (the recipient), ``dataset``, ``fields``,
``purposes``, ``period``, ``time``, ``withdrawal`` (how to withdraw: a URL
and an HTTP method), ``data_subject`` (Kantara's PII principal id, a
pseudonymous id, present only when the data is personal).

Anyone verifies a receipt with any JOSE library: the ``kid`` of its protected
header names a key of /.well-known/jwks.json.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal, Self

from joserfc import jws
from joserfc.errors import JoseError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from datapolis_consent.keys import RECEIPT_ALGORITHM, KeyRing, eddsa_accepted, key_set_from_jwks
from datapolis_shared.errors import DatapolisError

# The media type of the payload, in the protected header's `cty`.
RECEIPT_CONTENT_TYPE = "consent-receipt+json"

RecordKind = Literal["agreement", "consent"]
EventType = Literal[
    "granted", "amended", "refused", "revoked", "terminated", "withdrawn", "expired"
]


class InvalidReceipt(DatapolisError):
    """The receipt is not one the platform signed: bad form, bad signature,
    or a payload that is not a receipt."""

    code = "invalid-receipt"


class UnknownReceiptKey(InvalidReceipt):
    """The receipt names a key the platform never published."""

    code = "unknown-receipt-key"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Header(_Part):
    """TS 27560 header: which record this is and when it was issued."""

    version: Literal["1"] = "1"
    # This receipt's own id (Kantara's consentReceiptID).
    receipt_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    # What the receipt is about: an agreement or a data subject's consent, by id.
    record_kind: RecordKind
    record_id: str = Field(min_length=1)
    issued_at: AwareDatetime
    # The platform that signed it (Kantara's jurisdiction/controller contact
    # is the publisher's; this is the signer's public URL or name).
    issuer: str = Field(min_length=1)


class Period(_Part):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> Self:
        if self.end <= self.start:
            raise ValueError("a period ends after it starts")
        return self


class Processing(_Part):
    """TS 27560 processing: what may be done with which data, for how long."""

    dataset: str = Field(min_length=1)
    fields: tuple[str, ...]
    # W3C Data Privacy Vocabulary purposes (e.g. `dpv:ScientificResearch`).
    purposes: tuple[str, ...] = Field(min_length=1)
    period: Period


class Party(_Part):
    id: str = Field(min_length=1)
    name: str | None = None


class Parties(_Part):
    """TS 27560 parties: who decides, who receives, whom the data is about."""

    controller: Party
    consumer: Party
    # Pseudonymous id of the data subject, only for personal data.
    data_subject: str | None = None


class Event(_Part):
    """TS 27560 event: the state change this receipt attests, and the ledger
    row that recorded it (anyone holding a checkpoint can check the chain)."""

    type: EventType
    time: AwareDatetime
    ledger_sequence: int = Field(ge=0)
    ledger_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class Withdrawal(_Part):
    """How to withdraw or revoke: the call to make."""

    url: str = Field(min_length=1)
    method: Literal["POST", "DELETE"]


class Receipt(_Part):
    header: Header
    processing: Processing
    parties: Parties
    event: Event
    withdrawal: Withdrawal | None = None


def sign_receipt(receipt: Receipt, keys: KeyRing) -> str:
    """The receipt as a compact JWS signed with the ring's current key."""
    header = {"alg": RECEIPT_ALGORITHM, "kid": keys.kid, "cty": RECEIPT_CONTENT_TYPE}
    payload = receipt.model_dump_json(exclude_none=True).encode()
    with eddsa_accepted():
        return jws.serialize_compact(
            header, payload, keys.signing_key, algorithms=[RECEIPT_ALGORITHM]
        )


def build_receipt(
    *,
    keys: KeyRing,
    issuer: str,
    record_kind: RecordKind,
    record_id: str,
    event: Event,
    processing: Processing,
    parties: Parties,
    withdrawal: Withdrawal | None = None,
    issued_at: datetime | None = None,
) -> str:
    """The signed receipt of one ledger change, as a compact JWS."""
    receipt = Receipt(
        header=Header(
            record_kind=record_kind,
            record_id=record_id,
            issued_at=issued_at or event.time,
            issuer=issuer,
        ),
        processing=processing,
        parties=parties,
        event=event,
        withdrawal=withdrawal,
    )
    return sign_receipt(receipt, keys)


def verify_receipt(token: str, keys: KeyRing | dict[str, Any]) -> Receipt:
    """The receipt in ``token`` if one of ``keys`` (a ring, or a published
    JWK Set) signed it; otherwise :class:`InvalidReceipt`."""
    jwks = keys.jwks() if isinstance(keys, KeyRing) else keys
    try:
        key_set = key_set_from_jwks(jwks)
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise InvalidReceipt("the key set is not a JWK Set") from error
    try:
        protected = jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError) as error:
        raise InvalidReceipt("the receipt is not a compact JWS") from error
    kid = protected.get("kid")
    if protected.get("alg") != RECEIPT_ALGORITHM:
        raise InvalidReceipt(f"a receipt is signed with {RECEIPT_ALGORITHM}")
    if not isinstance(kid, str) or not any(key.kid == kid for key in key_set.keys):
        raise UnknownReceiptKey("the receipt names no published key", kid=kid)
    try:
        with eddsa_accepted():
            verified = jws.deserialize_compact(token, key_set, algorithms=[RECEIPT_ALGORITHM])
    except (JoseError, ValueError) as error:
        raise InvalidReceipt("the receipt's signature does not verify") from error
    try:
        return Receipt.model_validate(json.loads(verified.payload or b""))
    except (ValueError, ValidationError) as error:
        raise InvalidReceipt("the signed payload is not a receipt") from error
