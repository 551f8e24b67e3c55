"""Data-subject consents: a subject grants a consumer access to their records
of a personal dataset, for one purpose and a period, within an active
agreement of that consumer on that dataset whose purposes include it.

::

    granted --withdraw--> withdrawn
       |--(period ends)--> expired
       '--(its agreement ends)--> expired

The subject is who their subject token says (``sub``, pseudonymous per
issuer) for the dataset it names (``dataset``). Every change is one
transaction that locks the consent's row, appends the ledger row, writes the
``subject_consents`` projection and enqueues the event keyed by (dataset,
subject, consumer), so one subject's consents for a dataset and a consumer
reach Kafka in the order of their changes. A subject sees only their own
consents: anyone else's does not exist.

A consent is effective only while its agreement is granted: reads compute
``effective`` from both, and a consent still granted when its agreement ends
ends with it, in the agreement's transaction (:func:`end_with_agreement`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from datapolis_consent import ledger
from datapolis_consent.changes import NotYetPublished, Text, event_id_for
from datapolis_consent.datasets import Dataset, get_dataset
from datapolis_consent.keys import KeyRing
from datapolis_consent.purposes import PURPOSES
from datapolis_consent.receipts import Event as ReceiptEvent
from datapolis_consent.receipts import (
    EventType,
    Parties,
    Party,
    Period,
    Processing,
    Withdrawal,
    build_receipt,
)
from datapolis_consent.subject_tokens import SubjectClaims
from datapolis_shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from datapolis_shared.events.consent import ConsentExpired, ConsentGranted, ConsentWithdrawn
from datapolis_shared.postgres.outbox import enqueue, published_within
from datapolis_shared.postgres.pool import Connection, Pool

Status = Literal["granted", "withdrawn", "expired"]
SYSTEM_EXPIRY = "system:expiry"


# -- errors -------------------------------------------------------------------


class ConsentNotFound(NotFound):
    """No consent by this id that the subject gave."""

    code = "consent-not-found"


class WrongDatasetToken(Forbidden):
    """The subject token is for another dataset than the one named."""

    code = "wrong-dataset-token"


class DatasetNotPersonal(Conflict):
    code = "dataset-not-personal"


class NoActiveAgreement(Conflict):
    """The consumer holds no granted agreement on the dataset whose purposes
    include the one consented to, or the consent's period exceeds it."""

    code = "no-active-agreement"


class ConsentNotActive(Conflict):
    code = "consent-not-active"


class UnknownPurpose(InvalidInput):
    code = "unknown-purposes"


class InvalidPeriod(InvalidInput):
    code = "invalid-period"


class SubjectDatasetUnknown(NotFound):
    code = "dataset-not-found"


# -- what subjects send and get -----------------------------------------------


class ConsentRequest(BaseModel):
    """A subject's consent: which consumer, for which purpose, until when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Text = Field(
        min_length=1, max_length=200, description="the dataset's id or slug (the token's)"
    )
    consumer_org_id: Text = Field(min_length=1, max_length=200)
    purpose: Text = Field(
        min_length=1,
        max_length=200,
        description="a W3C DPV purpose, by compact IRI: " + ", ".join(PURPOSES),
        examples=["dpv:ScientificResearch"],
    )
    valid_from: AwareDatetime | None = Field(default=None, description="default: now")
    valid_until: AwareDatetime


class SubjectConsent(BaseModel):
    """A consent as it stands, with the ledger row of its last change.
    ``effective``: granted, within its period, and its agreement granted."""

    model_config = ConfigDict(frozen=True)

    consent_id: str
    dataset_id: str
    subject_id: str
    consumer_org_id: str
    agreement_id: str
    purpose: str
    valid_from: datetime
    valid_until: datetime
    status: Status
    agreement_status: str
    effective: bool
    granted_at: datetime
    ended_at: datetime | None
    updated_at: datetime
    ledger_sequence: int
    ledger_hash: str


class HistoryEntry(BaseModel):
    """One ledger row about one of the subject's consents."""

    model_config = ConfigDict(frozen=True)

    sequence: int
    consent_id: str
    change: str
    payload: dict[str, Any]
    actor: str
    recorded_at: datetime
    hash: str
    prev_hash: str


class SubjectExport(BaseModel):
    """Everything the platform records about a subject on a dataset."""

    model_config = ConfigDict(frozen=True)

    subject_id: str
    dataset_id: str
    issuer: str
    exported_at: datetime
    consents: list[SubjectConsent]
    history: list[HistoryEntry]


@dataclass(frozen=True)
class Change:
    consent: SubjectConsent
    entry: ledger.LedgerEntry
    event_id: str
    change: str
    publisher_org_id: str


# -- reading -------------------------------------------------------------------

_SELECT = """
SELECT c.consent_id, c.dataset_id, c.subject_id, c.issuer, c.consumer_org_id, c.agreement_id,
    c.purpose, c.valid_from, c.valid_until, c.status, c.granted_at, c.ended_at, c.updated_at,
    c.ledger_sequence, c.ledger_hash, a.status AS agreement_status
FROM subject_consents c JOIN agreements a ON a.agreement_id = c.agreement_id
"""
SELECT_ONE = _SELECT + "WHERE c.consent_id = $1"
LOCK_ONE = SELECT_ONE + " FOR UPDATE OF c"
LIST_OWN = (
    _SELECT
    + "WHERE c.dataset_id = $1 AND c.subject_id = $2 AND c.issuer = $3 "
    + "ORDER BY c.granted_at, c.consent_id"
)
# The consents granted within an agreement that is ending, locked before the
# agreement's ledger row is appended (the head lock comes after the consents'
# row locks, as in a withdrawal, so the two never wait for each other).
LIVE_OF_AGREEMENT = (
    _SELECT
    + "WHERE c.agreement_id = $1 AND c.status = 'granted' ORDER BY c.consent_id FOR UPDATE OF c"
)
NEXT_EXPIRED = (
    _SELECT
    + """WHERE c.status = 'granted' AND c.valid_until <= now()
ORDER BY c.valid_until LIMIT 1 FOR UPDATE OF c SKIP LOCKED"""
)
INSERT = """
INSERT INTO subject_consents (consent_id, dataset_id, subject_id, issuer, consumer_org_id,
    agreement_id, purpose, valid_from, valid_until, status, granted_at, ended_at, updated_at,
    ledger_sequence, ledger_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'granted', $10, NULL, $10, $11, $12)
"""
UPDATE = """
UPDATE subject_consents SET status = $2, ended_at = $3, updated_at = $3,
    ledger_sequence = $4, ledger_hash = $5
WHERE consent_id = $1
"""
# The granted agreement of a consumer on a dataset covering a purpose and a
# period; locked so it cannot end while the consent is being granted.
ACTIVE_AGREEMENT = """
SELECT agreement_id, status FROM agreements
WHERE dataset_id = $1 AND consumer_org_id = $2 AND status = 'granted' AND $3 = ANY(purposes)
    AND valid_from <= $4 AND valid_until >= $5 AND valid_until > now()
ORDER BY valid_until DESC LIMIT 1 FOR SHARE
"""
HISTORY = """
SELECT l.sequence, l.entity_id, l.change, l.payload, l.actor, l.recorded_at, l.hash, l.prev_hash
FROM ledger l JOIN subject_consents c ON c.consent_id = l.entity_id
WHERE l.entity_kind = 'consent' AND c.dataset_id = $1 AND c.subject_id = $2 AND c.issuer = $3
ORDER BY l.sequence
"""


def _consent(row: Any, now: datetime | None = None) -> SubjectConsent:
    moment = now or datetime.now(UTC)
    effective = (
        row["status"] == "granted"
        and row["agreement_status"] == "granted"
        and row["valid_from"] <= moment < row["valid_until"]
    )
    return SubjectConsent(
        consent_id=row["consent_id"],
        dataset_id=row["dataset_id"],
        subject_id=row["subject_id"],
        consumer_org_id=row["consumer_org_id"],
        agreement_id=row["agreement_id"],
        purpose=row["purpose"],
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        status=row["status"],
        agreement_status=row["agreement_status"],
        effective=effective,
        granted_at=row["granted_at"],
        ended_at=row["ended_at"],
        updated_at=row["updated_at"],
        ledger_sequence=row["ledger_sequence"],
        ledger_hash=row["ledger_hash"],
    )


def _storable(text: str) -> bool:
    return "\x00" not in text and text.isprintable() and len(text) <= 200


async def _token_dataset(conn: Connection, claims: SubjectClaims) -> Dataset:
    """The dataset the token names (by id or slug)."""
    if not _storable(claims.dataset):
        raise SubjectDatasetUnknown("the subject token names no dataset consent knows")
    try:
        return await get_dataset(conn, claims.dataset)
    except NotFound as error:
        raise SubjectDatasetUnknown(
            "the subject token names no dataset consent knows", dataset=claims.dataset
        ) from error


def _owned(row: Any, claims: SubjectClaims, dataset: Dataset) -> bool:
    return bool(
        row["dataset_id"] == dataset.dataset_id
        and row["subject_id"] == claims.subject
        and row["issuer"] == claims.issuer
    )


def _not_found(consent_id: str) -> ConsentNotFound:
    return ConsentNotFound(f"no consent {consent_id!r}", consent_id=consent_id)


async def list_consents(pool: Pool, claims: SubjectClaims) -> list[SubjectConsent]:
    async with pool.acquire() as conn:
        dataset = await _token_dataset(conn, claims)
        rows = await conn.fetch(LIST_OWN, dataset.dataset_id, claims.subject, claims.issuer)
    return [_consent(row) for row in rows]


async def get_consent(pool: Pool, claims: SubjectClaims, consent_id: str) -> SubjectConsent:
    async with pool.acquire() as conn:
        dataset = await _token_dataset(conn, claims)
        row = await conn.fetchrow(SELECT_ONE, consent_id) if _storable(consent_id) else None
    if row is None or not _owned(row, claims, dataset):
        raise _not_found(consent_id)
    return _consent(row)


async def history(pool: Pool, claims: SubjectClaims) -> list[HistoryEntry]:
    """The ledger rows of the subject's consents, in ledger order."""
    async with pool.acquire() as conn:
        dataset = await _token_dataset(conn, claims)
        rows = await conn.fetch(HISTORY, dataset.dataset_id, claims.subject, claims.issuer)
    return [_history_entry(row) for row in rows]


def _history_entry(row: Any) -> HistoryEntry:
    payload = row["payload"]
    if isinstance(payload, str):
        payload = json.loads(payload)
    return HistoryEntry(
        sequence=row["sequence"],
        consent_id=row["entity_id"],
        change=row["change"],
        payload=payload,
        actor=row["actor"],
        recorded_at=row["recorded_at"],
        hash=row["hash"],
        prev_hash=row["prev_hash"],
    )


async def export(pool: Pool, claims: SubjectClaims) -> SubjectExport:
    """One JSON document: the subject's consents and their whole history,
    read in one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        dataset = await _token_dataset(conn, claims)
        args = (dataset.dataset_id, claims.subject, claims.issuer)
        consents = [_consent(row) for row in await conn.fetch(LIST_OWN, *args)]
        rows = await conn.fetch(HISTORY, *args)
        return SubjectExport(
            subject_id=claims.subject,
            dataset_id=dataset.dataset_id,
            issuer=claims.issuer,
            exported_at=datetime.now(UTC),
            consents=consents,
            history=[_history_entry(row) for row in rows],
        )


# -- changing --------------------------------------------------------------------


def _event_base(consent: SubjectConsent, entry: ledger.LedgerEntry) -> dict[str, Any]:
    return {
        "consent_id": consent.consent_id,
        "dataset_id": consent.dataset_id,
        "subject_id": consent.subject_id,
        "consumer_org_id": consent.consumer_org_id,
        "agreement_id": consent.agreement_id,
        "purpose": consent.purpose,
        "ledger_sequence": entry.sequence,
        "ledger_hash": entry.hash,
        "occurred_at": entry.recorded_at,
    }


async def grant(pool: Pool, claims: SubjectClaims, body: ConsentRequest) -> Change:
    """Records the subject's consent, within the consumer's active agreement."""
    if body.purpose not in PURPOSES:
        raise UnknownPurpose(
            f"purpose {body.purpose!r} is not in the vocabulary (W3C DPV): {', '.join(PURPOSES)}",
            purposes=[body.purpose],
            known=list(PURPOSES),
        )
    now = datetime.now(UTC)
    start = body.valid_from or now
    if body.valid_until <= now:
        raise InvalidPeriod(
            "the period must end in the future", valid_until=body.valid_until.isoformat()
        )
    if body.valid_until <= start:
        raise InvalidPeriod(
            "the period must end after it starts", valid_until=body.valid_until.isoformat()
        )
    async with pool.acquire() as conn, conn.transaction():
        dataset = await _token_dataset(conn, claims)
        named = await get_dataset(conn, body.dataset) if _storable(body.dataset) else None
        if named is None or named.dataset_id != dataset.dataset_id:
            raise WrongDatasetToken(
                "the subject token is for another dataset", dataset=body.dataset
            )
        if not dataset.personal:
            raise DatasetNotPersonal(
                "subjects consent only on personal datasets", dataset=dataset.slug
            )
        agreement = await conn.fetchrow(
            ACTIVE_AGREEMENT,
            dataset.dataset_id,
            body.consumer_org_id,
            body.purpose,
            start,
            body.valid_until,
        )
        if agreement is None:
            raise NoActiveAgreement(
                "the consumer holds no active agreement on this dataset for this purpose "
                "and period",
                consumer_org_id=body.consumer_org_id,
                purpose=body.purpose,
            )
        consent_id = str(uuid.uuid4())
        entry = await ledger.append(
            conn,
            entity_kind="consent",
            entity_id=consent_id,
            change="granted",
            payload={
                "dataset_id": dataset.dataset_id,
                "subject_id": claims.subject,
                "issuer": claims.issuer,
                "consumer_org_id": body.consumer_org_id,
                "agreement_id": agreement["agreement_id"],
                "purpose": body.purpose,
                "valid_from": start.isoformat(),
                "valid_until": body.valid_until.isoformat(),
            },
            actor=f"subject:{claims.subject}",
        )
        await conn.execute(
            INSERT,
            consent_id,
            dataset.dataset_id,
            claims.subject,
            claims.issuer,
            body.consumer_org_id,
            agreement["agreement_id"],
            body.purpose,
            start,
            body.valid_until,
            entry.recorded_at,
            entry.sequence,
            entry.hash,
        )
        consent = _consent(await conn.fetchrow(SELECT_ONE, consent_id))
        event_id = await enqueue(
            conn,
            ConsentGranted(
                **_event_base(consent, entry),
                valid_from=consent.valid_from,
                valid_until=consent.valid_until,
            ),
            id=event_id_for(entry.hash),
        )
        return Change(consent, entry, event_id, "granted", dataset.publisher_id)


async def _end(
    conn: Connection,
    row: Any,
    status: Literal["withdrawn", "expired"],
    actor: str,
    *,
    reason: str | None = None,
) -> Change:
    dataset = await get_dataset(conn, row["dataset_id"])
    payload: dict[str, ledger.JsonValue] = {}
    if reason is not None:
        payload = {"reason": reason, "agreement_id": row["agreement_id"]}
    elif status == "expired":
        payload = {"valid_until": row["valid_until"].isoformat()}
    entry = await ledger.append(
        conn,
        entity_kind="consent",
        entity_id=row["consent_id"],
        change=status,
        payload=payload,
        actor=actor,
    )
    await conn.execute(
        UPDATE, row["consent_id"], status, entry.recorded_at, entry.sequence, entry.hash
    )
    consent = _consent(await conn.fetchrow(SELECT_ONE, row["consent_id"]))
    event: ConsentWithdrawn | ConsentExpired
    if status == "withdrawn":
        event = ConsentWithdrawn(**_event_base(consent, entry))
    else:
        event = ConsentExpired(**_event_base(consent, entry), reason=reason)
    event_id = await enqueue(conn, event, id=event_id_for(entry.hash))
    return Change(consent, entry, event_id, status, dataset.publisher_id)


async def withdraw(pool: Pool, claims: SubjectClaims, consent_id: str) -> Change:
    """Withdraws a granted consent. Withdrawing it again answers as the first
    withdrawal did; a consent that expired (or ended with its agreement) is a
    conflict."""
    async with pool.acquire() as conn, conn.transaction():
        dataset = await _token_dataset(conn, claims)
        row = await conn.fetchrow(LOCK_ONE, consent_id) if _storable(consent_id) else None
        if row is None or not _owned(row, claims, dataset):
            raise _not_found(consent_id)
        if row["status"] == "withdrawn":
            # Withdrawn already, by this subject (no one else withdraws): a
            # retry after a 503 or a lost answer gets the answer of the first
            # call, once its event is acknowledged.
            entry = await ledger.entry_at(conn, row["ledger_sequence"])
            if entry is not None and entry.change == "withdrawn":
                return Change(
                    _consent(row),
                    entry,
                    event_id_for(entry.hash),
                    "withdrawn",
                    dataset.publisher_id,
                )
        if row["status"] != "granted":
            raise ConsentNotActive(
                f"cannot withdraw a consent that is {row['status']}",
                consent_id=consent_id,
                consent_status=row["status"],
            )
        return await _end(conn, row, "withdrawn", f"subject:{claims.subject}")


async def lock_granted_within(conn: Connection, agreement_id: str) -> list[Any]:
    """The granted consents of ``agreement_id``, locked in the caller's
    transaction, for :func:`end_with_agreement`."""
    return list(await conn.fetch(LIVE_OF_AGREEMENT, agreement_id))


async def end_with_agreement(
    conn: Connection, locked: list[Any], *, agreement_change: str, actor: str
) -> list[Change]:
    """In the transaction that ends their agreement (revoked, terminated,
    expired, or ended with its dataset): each consent in ``locked`` expires
    too, with a ledger row and a ``ConsentExpired`` event of its own, keyed
    as its other events, whose reason names the agreement's end. A consent
    is never left granted within an agreement that is over."""
    reason = f"agreement {agreement_change}"
    return [await _end(conn, row, "expired", actor, reason=reason) for row in locked]


async def expire_next(pool: Pool) -> Change | None:
    """Ends one granted consent whose period is over, if any (replicas skip
    the rows another holds)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(NEXT_EXPIRED)
        if row is None:
            return None
        return await _end(conn, row, "expired", SYSTEM_EXPIRY)


async def expire_due(pool: Pool) -> int:
    ended = 0
    while await expire_next(pool) is not None:
        ended += 1
    return ended


# -- publication -----------------------------------------------------------------


async def wait_published(pool: Pool, change: Change, *, timeout_s: float) -> None:
    """Returns once the relay has had ``change``'s event acknowledged by
    Kafka; ``NotYetPublished`` after ``timeout_s`` (the withdrawal stays
    committed and is published once Kafka answers), as for a revocation."""
    if not await published_within(pool, change.event_id, timeout_s=timeout_s):
        raise NotYetPublished(
            f"the consent is {change.consent.status}, but Kafka has not acknowledged "
            "the event yet: it will be published once Kafka answers; deliveries stop then",
            consent_id=change.consent.consent_id,
            consent_status=change.consent.status,
            retry_after_s=5,
        )


# -- receipts --------------------------------------------------------------------

_RECEIPT_EVENTS: dict[str, EventType] = {"granted": "granted", "withdrawn": "withdrawn"}


def receipt_for(change: Change, *, keys: KeyRing, issuer: str, base_url: str) -> str | None:
    """The signed receipt of a grant or a withdrawal."""
    event_type = _RECEIPT_EVENTS.get(change.change)
    if event_type is None:
        return None
    consent = change.consent
    withdrawal = None
    if consent.status == "granted":
        withdrawal = Withdrawal(
            url=f"{base_url}/subjects/me/consents/{consent.consent_id}/withdraw", method="POST"
        )
    return build_receipt(
        keys=keys,
        issuer=issuer,
        record_kind="consent",
        record_id=consent.consent_id,
        event=ReceiptEvent(
            type=event_type,
            time=change.entry.recorded_at,
            ledger_sequence=change.entry.sequence,
            ledger_hash=change.entry.hash,
        ),
        processing=Processing(
            dataset=consent.dataset_id,
            fields=(),
            purposes=(consent.purpose,),
            period=Period(start=consent.valid_from, end=consent.valid_until),
        ),
        parties=Parties(
            controller=Party(id=change.publisher_org_id),
            consumer=Party(id=consent.consumer_org_id),
            data_subject=consent.subject_id,
        ),
        withdrawal=withdrawal,
    )
