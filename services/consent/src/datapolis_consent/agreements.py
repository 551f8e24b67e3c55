"""Sharing agreements: their life cycle, recorded in the ledger.

A consumer organisation requests access to a shared or personal dataset
within a project; the dataset's publisher grants it (narrowing the fields or
the period if it wishes) or refuses it with a reason; it may amend it later
or revoke it with a reason; the consumer may terminate it; it expires by
itself at the end of its period, and ends when its dataset is retired.

::

    requested --grant--> granted --amend--> granted
        |                   |--revoke----> revoked
        '--refuse--> refused |--terminate-> terminated
                             '--(period ends)--> expired

Every change is one transaction that locks the agreement's row, appends the
ledger row (before the outbox, see :mod:`datapolis_consent.ledger.store`),
writes the ``agreements`` projection and enqueues the event keyed by the
agreement's id, so an agreement's events reach Kafka in the order of its
changes. Only parties see an agreement: to anyone else (but the operator) it
does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from datapolis_consent import ledger, subjects
from datapolis_consent.changes import (
    NotYetPublished,
    Text,
    event_id_for,
)
from datapolis_consent.datasets import (
    Dataset,
    check_fields,
    get_dataset,
    require_agreement_possible,
)
from datapolis_consent.keys import KeyRing
from datapolis_consent.purposes import PURPOSES
from datapolis_consent.receipts import (
    Event as ReceiptEvent,
)
from datapolis_consent.receipts import (
    EventType,
    Parties,
    Party,
    Period,
    Processing,
    Withdrawal,
    build_receipt,
)
from datapolis_shared.auth import Principal
from datapolis_shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from datapolis_shared.events.consent import (
    AgreementAmended,
    AgreementExpired,
    AgreementGranted,
    AgreementRefused,
    AgreementRequested,
    AgreementRevoked,
    AgreementTerminated,
)
from datapolis_shared.postgres.outbox import enqueue, published_within
from datapolis_shared.postgres.pool import Connection, Pool

Status = Literal["requested", "granted", "refused", "revoked", "terminated", "expired"]
# The one scope every write needs; reading also accepts `read`.
WRITE_SCOPE = "consent"
READ_SCOPES = ("read", "consent")
SYSTEM_EXPIRY = "system:expiry"
SYSTEM_RETIREMENT = "system:retirement"
# The changes that end a granted agreement, and with it its subjects' consents.
_ENDINGS = frozenset({"revoked", "terminated", "expired"})


# -- errors -------------------------------------------------------------------


class AgreementNotFound(NotFound):
    """No agreement by this id that the caller may see (a party's or, for the
    operator, any)."""

    code = "agreement-not-found"


class NotThePublisher(Forbidden):
    code = "not-the-publisher"


class NotTheConsumer(Forbidden):
    code = "not-the-consumer"


class AgreementNotPending(Conflict):
    """Grant and refuse decide a request; this agreement is no longer one."""

    code = "agreement-not-pending"


class AgreementNotActive(Conflict):
    """Amend, revoke and terminate change a granted agreement."""

    code = "agreement-not-active"


class UnknownPurposes(InvalidInput):
    code = "unknown-purposes"


class InvalidPeriod(InvalidInput):
    code = "invalid-period"


class OwnDataset(InvalidInput):
    code = "own-dataset"


class FieldsNotRequested(InvalidInput):
    code = "fields-not-requested"


class NothingToAmend(InvalidInput):
    code = "nothing-to-amend"


# -- what callers send and get ------------------------------------------------


_Name = Field(min_length=1, max_length=200)
_Reason = Field(min_length=1, max_length=2000, description="why, in words the other party reads")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Body):
    name: Text = _Name
    description: Text = Field(default="", max_length=4000)


class AgreementRequest(_Body):
    """A consumer's request for access to a dataset."""

    dataset: Text = Field(min_length=1, max_length=200, description="the dataset's id or slug")
    project: Project
    purposes: list[Text] = Field(
        min_length=1,
        max_length=len(PURPOSES),
        description="W3C DPV purposes, by compact IRI: " + ", ".join(PURPOSES),
        examples=[["dpv:ScientificResearch"]],
    )
    fields: list[Text] = Field(min_length=1, max_length=1000)
    valid_from: AwareDatetime | None = Field(default=None, description="default: now")
    valid_until: AwareDatetime


class Terms(_Body):
    """What a grant or an amendment settles; left out, a term stays as
    requested (grant) or as granted (amend). Fields and period may only
    narrow the request."""

    fields: list[Text] | None = Field(default=None, min_length=1, max_length=1000)
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None


class Reason(_Body):
    reason: Text = _Reason


class Termination(_Body):
    reason: Text | None = Field(default=None, min_length=1, max_length=2000)


class Agreement(BaseModel):
    """An agreement as it stands, with the ledger row of its last change."""

    model_config = ConfigDict(frozen=True)

    agreement_id: str
    dataset_id: str
    publisher_org_id: str
    consumer_org_id: str
    project: Project
    purposes: list[str]
    requested_fields: list[str]
    granted_fields: list[str] | None
    valid_from: datetime
    valid_until: datetime
    status: Status
    reason: str | None
    requested_at: datetime
    decided_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    ledger_sequence: int
    ledger_hash: str

    @property
    def fields(self) -> list[str]:
        return self.granted_fields if self.granted_fields is not None else self.requested_fields


@dataclass(frozen=True)
class Change:
    """One recorded change: the agreement after it, its ledger row and the
    id of the outbox event announcing it."""

    agreement: Agreement
    entry: ledger.LedgerEntry
    event_id: str
    change: str


# -- reading -------------------------------------------------------------------

_COLUMNS = """
agreement_id, dataset_id, publisher_org_id, consumer_org_id, project_name,
project_description, purposes, requested_fields, granted_fields, valid_from,
valid_until, status, reason, requested_at, decided_at, ended_at, updated_at,
ledger_sequence, ledger_hash
"""
SELECT_ONE = "SELECT" + _COLUMNS + "FROM agreements WHERE agreement_id = $1"
LOCK_ONE = SELECT_ONE + " FOR UPDATE"
LIST_ALL = "SELECT" + _COLUMNS + "FROM agreements ORDER BY requested_at, agreement_id"
LIST_OWN = (
    "SELECT"
    + _COLUMNS
    + """FROM agreements WHERE consumer_org_id = $1 OR publisher_org_id = $1
ORDER BY requested_at, agreement_id
"""
)
INSERT = (
    "INSERT INTO agreements ("
    + _COLUMNS
    + """)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
"""
)
UPDATE = """
UPDATE agreements SET granted_fields = $2, valid_from = $3, valid_until = $4, status = $5,
    reason = $6, decided_at = $7, ended_at = $8, updated_at = $9,
    ledger_sequence = $10, ledger_hash = $11
WHERE agreement_id = $1
"""
# The agreements the expiry task ends: one at a time, each in a transaction of
# its own; replicas skip the rows another one holds.
NEXT_EXPIRED = (
    "SELECT"
    + _COLUMNS
    + """FROM agreements
WHERE status = 'granted' AND valid_until <= now()
ORDER BY valid_until LIMIT 1 FOR UPDATE SKIP LOCKED
"""
)
LIVE_OF_DATASET = (
    "SELECT"
    + _COLUMNS
    + """FROM agreements
WHERE dataset_id = $1 AND status IN ('requested', 'granted')
ORDER BY requested_at, agreement_id FOR UPDATE
"""
)


def agreement_from_row(row: Any) -> Agreement:
    return Agreement(
        agreement_id=row["agreement_id"],
        dataset_id=row["dataset_id"],
        publisher_org_id=row["publisher_org_id"],
        consumer_org_id=row["consumer_org_id"],
        project=Project(name=row["project_name"], description=row["project_description"]),
        purposes=list(row["purposes"]),
        requested_fields=list(row["requested_fields"]),
        granted_fields=None if row["granted_fields"] is None else list(row["granted_fields"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        status=row["status"],
        reason=row["reason"],
        requested_at=row["requested_at"],
        decided_at=row["decided_at"],
        ended_at=row["ended_at"],
        updated_at=row["updated_at"],
        ledger_sequence=row["ledger_sequence"],
        ledger_hash=row["ledger_hash"],
    )


def _require_read(caller: Principal) -> None:
    if not caller.is_operator and not any(scope in caller.scopes for scope in READ_SCOPES):
        caller.require("read")


def _visible(caller: Principal, agreement: Agreement) -> bool:
    return caller.is_operator or caller.org_id in (
        agreement.consumer_org_id,
        agreement.publisher_org_id,
    )


def _not_found(agreement_id: str) -> AgreementNotFound:
    return AgreementNotFound(f"no agreement {agreement_id!r}", agreement_id=agreement_id)


async def get_agreement(pool: Pool, caller: Principal, agreement_id: str) -> Agreement:
    """The agreement, to its parties and the operator; not found to anyone else."""
    _require_read(caller)
    row = await pool.fetchrow(SELECT_ONE, agreement_id) if _storable(agreement_id) else None
    if row is None:
        raise _not_found(agreement_id)
    agreement = agreement_from_row(row)
    if not _visible(caller, agreement):
        raise _not_found(agreement_id)
    return agreement


async def list_agreements(pool: Pool, caller: Principal) -> list[Agreement]:
    """The caller's agreements, as consumer or as publisher; all of them for
    the operator."""
    _require_read(caller)
    if caller.is_operator:
        rows = await pool.fetch(LIST_ALL)
    else:
        rows = await pool.fetch(LIST_OWN, caller.org_id)
    return [agreement_from_row(row) for row in rows]


def _storable(text: str) -> bool:
    return "\x00" not in text and text.isprintable() and len(text) <= 200


# -- changing --------------------------------------------------------------------


def _check_purposes(purposes: Sequence[str]) -> list[str]:
    unknown = [purpose for purpose in purposes if purpose not in PURPOSES]
    if unknown:
        raise UnknownPurposes(
            f"purposes {unknown} are not in the vocabulary (W3C DPV): {', '.join(PURPOSES)}",
            purposes=unknown,
            known=list(PURPOSES),
        )
    return list(dict.fromkeys(purposes))


def _check_period(start: datetime, end: datetime, now: datetime) -> None:
    if end <= now:
        raise InvalidPeriod("the period must end in the future", valid_until=end.isoformat())
    if end <= start:
        raise InvalidPeriod("the period must end after it starts", valid_until=end.isoformat())


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _terms_payload(agreement: Agreement) -> dict[str, ledger.JsonValue]:
    return {
        "dataset_id": agreement.dataset_id,
        "publisher_org_id": agreement.publisher_org_id,
        "consumer_org_id": agreement.consumer_org_id,
        "purposes": list(agreement.purposes),
        "fields": list(agreement.fields),
        "valid_from": agreement.valid_from.isoformat(),
        "valid_until": agreement.valid_until.isoformat(),
    }


async def request_agreement(pool: Pool, caller: Principal, body: AgreementRequest) -> Change:
    """Records a consumer's request (the caller's organisation is the consumer)."""
    caller.require(WRITE_SCOPE)
    purposes = _check_purposes(body.purposes)
    now = datetime.now(UTC)
    start = body.valid_from or now
    _check_period(start, body.valid_until, now)
    async with pool.acquire() as conn, conn.transaction():
        dataset = require_agreement_possible(await get_dataset(conn, body.dataset))
        fields = check_fields(dataset, body.fields)
        if dataset.publisher_id == caller.org_id:
            raise OwnDataset(
                "a publisher needs no agreement on its own dataset", dataset=dataset.slug
            )
        agreement_id = str(uuid.uuid4())
        draft = Agreement(
            agreement_id=agreement_id,
            dataset_id=dataset.dataset_id,
            publisher_org_id=dataset.publisher_id,
            consumer_org_id=caller.org_id,
            project=body.project,
            purposes=purposes,
            requested_fields=list(fields),
            granted_fields=None,
            valid_from=start,
            valid_until=body.valid_until,
            status="requested",
            reason=None,
            requested_at=now,
            decided_at=None,
            ended_at=None,
            updated_at=now,
            ledger_sequence=0,
            ledger_hash="0" * 64,
        )
        entry = await ledger.append(
            conn,
            entity_kind="agreement",
            entity_id=agreement_id,
            change="requested",
            payload={
                **_terms_payload(draft),
                "project": {"name": body.project.name, "description": body.project.description},
            },
            actor=f"org:{caller.org_id}",
        )
        agreement = draft.model_copy(
            update={
                "requested_at": entry.recorded_at,
                "updated_at": entry.recorded_at,
                "ledger_sequence": entry.sequence,
                "ledger_hash": entry.hash,
            }
        )
        await conn.execute(
            INSERT,
            agreement.agreement_id,
            agreement.dataset_id,
            agreement.publisher_org_id,
            agreement.consumer_org_id,
            agreement.project.name,
            agreement.project.description,
            agreement.purposes,
            agreement.requested_fields,
            None,
            agreement.valid_from,
            agreement.valid_until,
            agreement.status,
            None,
            agreement.requested_at,
            None,
            None,
            agreement.updated_at,
            agreement.ledger_sequence,
            agreement.ledger_hash,
        )
        event_id = await enqueue(
            conn,
            AgreementRequested(
                **_event_base(agreement, entry),
                project_name=agreement.project.name,
                purposes=agreement.purposes,
                fields=agreement.requested_fields,
                valid_from=agreement.valid_from,
                valid_until=agreement.valid_until,
            ),
        )
    return Change(agreement, entry, event_id, "requested")


def _event_base(agreement: Agreement, entry: ledger.LedgerEntry) -> dict[str, Any]:
    return {
        "agreement_id": agreement.agreement_id,
        "dataset_id": agreement.dataset_id,
        "publisher_org_id": agreement.publisher_org_id,
        "consumer_org_id": agreement.consumer_org_id,
        "ledger_sequence": entry.sequence,
        "ledger_hash": entry.hash,
        "occurred_at": entry.recorded_at,
    }


async def _locked(conn: Connection, caller: Principal | None, agreement_id: str) -> Agreement:
    row = await conn.fetchrow(LOCK_ONE, agreement_id) if _storable(agreement_id) else None
    if row is None:
        raise _not_found(agreement_id)
    agreement = agreement_from_row(row)
    if caller is not None and not _visible(caller, agreement):
        raise _not_found(agreement_id)
    return agreement


def _require_publisher(caller: Principal, agreement: Agreement) -> None:
    if caller.org_id != agreement.publisher_org_id:
        raise NotThePublisher(
            "only the dataset's publisher decides on its agreements",
            agreement_id=agreement.agreement_id,
        )


def _require_status(agreement: Agreement, status: Status, action: str) -> None:
    if agreement.status == status:
        return
    error = AgreementNotPending if status == "requested" else AgreementNotActive
    raise error(
        f"cannot {action} an agreement that is {agreement.status}",
        agreement_id=agreement.agreement_id,
        agreement_status=agreement.status,
    )


def _narrowed(agreement: Agreement, terms: Terms, now: datetime) -> Agreement:
    """The agreement with ``terms`` applied, which may only narrow the request."""
    fields = agreement.fields
    if terms.fields is not None:
        fields = list(dict.fromkeys(terms.fields))
        extra = [name for name in fields if name not in agreement.requested_fields]
        if extra:
            raise FieldsNotRequested(
                f"fields {extra} were not requested: a grant may only narrow the request",
                fields=extra,
            )
    start = terms.valid_from or agreement.valid_from
    end = terms.valid_until or agreement.valid_until
    requested_start = agreement.valid_from if agreement.status == "requested" else start
    if start < requested_start:
        raise InvalidPeriod("the period may only narrow the request: it starts too early")
    if agreement.status == "requested" and end > agreement.valid_until:
        raise InvalidPeriod("the period may only narrow the request: it ends too late")
    _check_period(start, end, now)
    return agreement.model_copy(
        update={"granted_fields": fields, "valid_from": start, "valid_until": end}
    )


async def _record(
    conn: Connection,
    before: Agreement,
    after: Agreement,
    *,
    change: str,
    actor: str,
    payload: dict[str, ledger.JsonValue],
) -> Change:
    # An agreement that ends takes the consents granted within it along, in
    # this transaction; they are locked before the ledger's head (see
    # subjects.LIVE_OF_AGREEMENT).
    ends_consents = before.status == "granted" and change in _ENDINGS
    consents = (
        await subjects.lock_granted_within(conn, before.agreement_id) if ends_consents else []
    )
    entry = await ledger.append(
        conn,
        entity_kind="agreement",
        entity_id=before.agreement_id,
        change=change,
        payload=payload,
        actor=actor,
    )
    at = entry.recorded_at
    ended = change in ("refused", "revoked", "terminated", "expired")
    agreement = after.model_copy(
        update={
            "updated_at": at,
            "decided_at": at if change in ("granted", "refused") else after.decided_at,
            "ended_at": at if ended else after.ended_at,
            "ledger_sequence": entry.sequence,
            "ledger_hash": entry.hash,
        }
    )
    await conn.execute(
        UPDATE,
        agreement.agreement_id,
        agreement.granted_fields,
        agreement.valid_from,
        agreement.valid_until,
        agreement.status,
        agreement.reason,
        agreement.decided_at,
        agreement.ended_at,
        agreement.updated_at,
        agreement.ledger_sequence,
        agreement.ledger_hash,
    )
    base = _event_base(agreement, entry)
    terms = {
        "purposes": agreement.purposes,
        "fields": agreement.fields,
        "valid_from": agreement.valid_from,
        "valid_until": agreement.valid_until,
    }
    event: Any
    if change == "granted":
        event = AgreementGranted(**base, **terms)
    elif change == "amended":
        event = AgreementAmended(**base, **terms)
    elif change == "refused":
        event = AgreementRefused(**base, reason=agreement.reason or "")
    elif change == "revoked":
        event = AgreementRevoked(**base, reason=agreement.reason or "")
    elif change == "terminated":
        event = AgreementTerminated(**base, reason=agreement.reason)
    else:
        event = AgreementExpired(**base)
    event_id = await enqueue(conn, event, id=event_id_for(entry.hash))
    if consents:
        await subjects.end_with_agreement(conn, consents, agreement_change=change, actor=actor)
    return Change(agreement, entry, event_id, change)


async def _repeated(
    conn: Connection, agreement: Agreement, change: str, actor: str
) -> Change | None:
    """The change that ended ``agreement``, when it is the one asked again
    (same change, same actor, same reason: the caller's retry, after a 503
    or a lost answer); None otherwise. The retry then answers as the first
    call would have: once the change's event is acknowledged."""
    if agreement.status != change:
        return None
    entry = await ledger.entry_at(conn, agreement.ledger_sequence)
    if entry is None or entry.change != change or entry.actor != actor:
        return None
    return Change(agreement, entry, event_id_for(entry.hash), change)


async def grant(pool: Pool, caller: Principal, agreement_id: str, terms: Terms) -> Change:
    caller.require(WRITE_SCOPE)
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        before = await _locked(conn, caller, agreement_id)
        _require_publisher(caller, before)
        _require_status(before, "requested", "grant")
        require_agreement_possible(await get_dataset(conn, before.dataset_id))
        after = _narrowed(before, terms, now).model_copy(update={"status": "granted"})
        return await _record(
            conn,
            before,
            after,
            change="granted",
            actor=f"org:{caller.org_id}",
            payload=_terms_payload(after),
        )


async def amend(pool: Pool, caller: Principal, agreement_id: str, terms: Terms) -> Change:
    caller.require(WRITE_SCOPE)
    if terms.fields is None and terms.valid_from is None and terms.valid_until is None:
        raise NothingToAmend("an amendment changes the fields or the period")
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        before = await _locked(conn, caller, agreement_id)
        _require_publisher(caller, before)
        _require_status(before, "granted", "amend")
        after = _narrowed(before, terms, now)
        return await _record(
            conn,
            before,
            after,
            change="amended",
            actor=f"org:{caller.org_id}",
            payload=_terms_payload(after),
        )


async def refuse(pool: Pool, caller: Principal, agreement_id: str, body: Reason) -> Change:
    """Refuses a request; the same refusal asked again answers as the first."""
    return await _publisher_ends(pool, caller, agreement_id, body, "requested", "refused")


async def revoke(pool: Pool, caller: Principal, agreement_id: str, body: Reason) -> Change:
    """Revokes a granted agreement. The same revocation asked again (same
    reason) answers with the change already recorded, not a conflict: a
    publisher retrying after a 503 learns whether it is on Kafka by now.
    Another reason, or an agreement ended otherwise, is a conflict."""
    return await _publisher_ends(pool, caller, agreement_id, body, "granted", "revoked")


async def _publisher_ends(
    pool: Pool,
    caller: Principal,
    agreement_id: str,
    body: Reason,
    status: Status,
    change: Literal["refused", "revoked"],
) -> Change:
    """The publisher refuses a request or revokes a grant, with its reason."""
    caller.require(WRITE_SCOPE)
    async with pool.acquire() as conn, conn.transaction():
        before = await _locked(conn, caller, agreement_id)
        _require_publisher(caller, before)
        if before.reason == body.reason:
            repeated = await _repeated(conn, before, change, f"org:{caller.org_id}")
            if repeated is not None:
                return repeated
        _require_status(before, status, "refuse" if change == "refused" else "revoke")
        after = before.model_copy(update={"status": change, "reason": body.reason})
        return await _record(
            conn,
            before,
            after,
            change=change,
            actor=f"org:{caller.org_id}",
            payload={"reason": body.reason},
        )


async def terminate(pool: Pool, caller: Principal, agreement_id: str, body: Termination) -> Change:
    """Terminates a granted agreement; asked again with the same reason, it
    answers with the termination already recorded (as :func:`revoke`).
    An agreement terminated by its dataset's retirement is a conflict."""
    caller.require(WRITE_SCOPE)
    async with pool.acquire() as conn, conn.transaction():
        before = await _locked(conn, caller, agreement_id)
        if caller.org_id != before.consumer_org_id:
            raise NotTheConsumer(
                "only the consumer terminates an agreement (the publisher revokes it)",
                agreement_id=agreement_id,
            )
        if before.reason == body.reason:
            repeated = await _repeated(conn, before, "terminated", f"org:{caller.org_id}")
            if repeated is not None:
                return repeated
        _require_status(before, "granted", "terminate")
        after = before.model_copy(update={"status": "terminated", "reason": body.reason})
        return await _record(
            conn,
            before,
            after,
            change="terminated",
            actor=f"org:{caller.org_id}",
            payload={"reason": body.reason},
        )


async def expire_next(pool: Pool) -> Change | None:
    """Ends one granted agreement whose period is over, if any; several
    replicas running this never end the same one twice (the row is locked,
    the others skip it, and it is no longer granted once committed)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(NEXT_EXPIRED)
        if row is None:
            return None
        before = agreement_from_row(row)
        after = before.model_copy(update={"status": "expired", "reason": "period ended"})
        return await _record(
            conn,
            before,
            after,
            change="expired",
            actor=SYSTEM_EXPIRY,
            payload={"valid_until": before.valid_until.isoformat()},
        )


async def expire_due(pool: Pool) -> int:
    """Ends every granted agreement whose period is over; how many."""
    ended = 0
    while await expire_next(pool) is not None:
        ended += 1
    return ended


async def end_for_retired_dataset(conn: Connection, dataset: Dataset) -> list[Change]:
    """In the transaction that records ``dataset``'s retirement: its granted
    agreements are terminated and its pending requests refused, each with
    the retirement as reason."""
    changes = []
    reason = f"dataset {dataset.slug!r} was retired"
    for row in await conn.fetch(LIVE_OF_DATASET, dataset.dataset_id):
        before = agreement_from_row(row)
        change = "terminated" if before.status == "granted" else "refused"
        after = before.model_copy(update={"status": change, "reason": reason})
        changes.append(
            await _record(
                conn,
                before,
                after,
                change=change,
                actor=SYSTEM_RETIREMENT,
                payload={"reason": reason},
            )
        )
    return changes


async def on_dataset_retired(conn: Connection, dataset: Dataset) -> None:
    """Called once per retirement, in the transaction that records it (see
    :mod:`datapolis_consent.projection`): the dataset's agreements end with
    the retirement, committed together or not at all."""
    await end_for_retired_dataset(conn, dataset)


# -- publication -----------------------------------------------------------------


async def wait_published(pool: Pool, change: Change, *, timeout_s: float) -> None:
    """Returns once the relay has had ``change``'s event acknowledged by
    Kafka; ``NotYetPublished`` after ``timeout_s``. The relay, woken by the
    commit's NOTIFY, publishes it: publishing here as well would race it and
    could put an agreement's events out of order."""
    if not await published_within(pool, change.event_id, timeout_s=timeout_s):
        raise NotYetPublished(
            f"the agreement is {change.agreement.status}, but Kafka has not acknowledged "
            "the event yet: it will be published once Kafka answers; deliveries stop "
            "then",
            agreement_id=change.agreement.agreement_id,
            agreement_status=change.agreement.status,
            retry_after_s=5,
        )


# -- receipts --------------------------------------------------------------------

_RECEIPT_EVENTS: dict[str, EventType] = {
    "granted": "granted",
    "amended": "amended",
    "revoked": "revoked",
}


def receipt_for(change: Change, *, keys: KeyRing, issuer: str, base_url: str) -> str | None:
    """The signed receipt of a grant, an amendment or a revocation."""
    event_type = _RECEIPT_EVENTS.get(change.change)
    if event_type is None:
        return None
    agreement = change.agreement
    withdrawal = None
    if agreement.status == "granted":
        withdrawal = Withdrawal(
            url=f"{base_url}/agreements/{agreement.agreement_id}/revoke", method="POST"
        )
    return build_receipt(
        keys=keys,
        issuer=issuer,
        record_kind="agreement",
        record_id=agreement.agreement_id,
        event=ReceiptEvent(
            type=event_type,
            time=change.entry.recorded_at,
            ledger_sequence=change.entry.sequence,
            ledger_hash=change.entry.hash,
        ),
        processing=Processing(
            dataset=agreement.dataset_id,
            fields=tuple(agreement.fields),
            purposes=tuple(agreement.purposes),
            period=Period(start=agreement.valid_from, end=agreement.valid_until),
        ),
        parties=Parties(
            controller=Party(id=agreement.publisher_org_id),
            consumer=Party(id=agreement.consumer_org_id),
        ),
        withdrawal=withdrawal,
    )
