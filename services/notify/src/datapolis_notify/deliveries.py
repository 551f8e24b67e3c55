"""The delivery log and the dead letters, as the parties read them.

The delivery worker writes one ``deliveries`` row per message (a batch of
records or one notification) with the agreement and consent ids it relied
on, and keeps the messages not yet done in ``delivery_queue``; after the last
retry a message stays there as ``dead``. This module reads them for the API
and puts dead letters back in the queue:

- a consumer sees the deliveries made to it, a publisher those of its
  datasets, the operator all; to anyone else a delivery does not exist;
- a consumer sees and replays its own dead letters, the operator any;
- a replayed message goes back to ``waiting`` with attempt 0, due now, and
  keeps its id (receivers deduplicate on it). Nothing is decided here: the
  worker checks the entitlement (agreement, consent) again at the attempt,
  as at every attempt, so a replay sends nothing a consumer may no longer
  receive.

The queued payload is never shown: it holds the records as read, before
any filter or projection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from datapolis_notify.subscriptions import (
    WRITE_SCOPE,
    Instant,
    InvalidCursor,
    Text,
    cursor_time,
    decode_cursor,
    encode_cursor,
    require_read,
    storable,
)
from datapolis_shared.auth import Principal
from datapolis_shared.errors import InvalidInput, NotFound
from datapolis_shared.postgres.pool import Pool

DeliveryStatus = Literal["delivered", "pending", "dead", "withheld"]


class DeliveryNotFound(NotFound):
    code = "delivery-not-found"


class DeadLetterNotFound(NotFound):
    code = "dead-letter-not-found"


class InvalidTimeRange(InvalidInput):
    code = "invalid-time-range"


class Delivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    delivery_id: str = Field(description="the message id (webhook-id): the same across retries")
    subscription_id: str
    consumer_id: str
    publisher_id: str | None
    dataset_id: str | None
    channel: str
    kind: Literal["records", "notification"]
    event_type: str | None
    record_count: int
    agreement_ids: list[str] = Field(description="the agreements the delivery relied on")
    consent_ids: list[str] = Field(description="the data subjects' consents it relied on")
    status: DeliveryStatus
    attempts: int
    last_status: int | None
    last_error: str | None = Field(description="shown to the consumer and the operator only")
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class DeadLetter(Delivery):
    attempt: int = Field(description="attempts made before it was given up")
    dead_at: datetime | None


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class ReplayRange(BaseModel):
    """Dead letters to replay: of one subscription, or all the caller's;
    those given up between ``since`` and ``until`` (both optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscription_id: Text | None = Field(default=None, max_length=200)
    since: Instant | None = None
    until: Instant | None = None


class Replayed(BaseModel):
    replayed: int = Field(description="dead letters put back in the queue, due now")


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise InvalidTimeRange("`since` is after `until`")


_COLUMNS = """
d.delivery_id, d.subscription_id, d.consumer_id, d.publisher_id, d.dataset_id, d.channel,
d.kind, d.event_type, d.record_count, d.agreement_ids, d.consent_ids, d.status, d.attempts,
d.last_status, d.last_error, d.created_at, d.last_attempt_at, d.delivered_at
"""
# $1: the caller's organisation, or NULL for the operator (every row).
_VISIBLE = "($1::text IS NULL OR d.consumer_id = $1 OR d.publisher_id = $1)"
# The log's filters ($3: a dataset's id or slug), newest first, keyset on
# (created_at, delivery_id).
_LOG_FILTERS = """
  AND ($2::text IS NULL OR d.subscription_id = $2)
  AND ($3::text IS NULL OR d.dataset_id = $3
       OR d.dataset_id IN (SELECT dataset_id FROM datasets WHERE slug = $3))
  AND ($4::text IS NULL OR d.status = $4)
  AND ($5::timestamptz IS NULL OR d.created_at >= $5)
  AND ($6::timestamptz IS NULL OR d.created_at < $6)
  AND ($7::timestamptz IS NULL OR (d.created_at, d.delivery_id) < ($7, $8))
ORDER BY d.created_at DESC, d.delivery_id DESC
LIMIT $9
"""
LIST_DELIVERIES = "SELECT" + _COLUMNS + "FROM deliveries d WHERE " + _VISIBLE + _LOG_FILTERS
SELECT_DELIVERY = "SELECT" + _COLUMNS + "FROM deliveries d WHERE d.delivery_id = $2 AND " + _VISIBLE
# Dead letters: the consumer's own ($1), or every one for the operator (NULL).
_DEAD = """
FROM delivery_queue q JOIN deliveries d ON d.delivery_id = q.delivery_id
WHERE q.state = 'dead' AND ($1::text IS NULL OR d.consumer_id = $1)
"""
LIST_DEAD = (
    "SELECT q.seq, q.attempt, q.dead_at,"
    + _COLUMNS
    + _DEAD
    + """
  AND ($2::text IS NULL OR q.subscription_id = $2)
  AND ($3::timestamptz IS NULL OR q.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR q.dead_at < $4)
  AND ($5::bigint IS NULL OR q.seq > $5)
ORDER BY q.seq
LIMIT $6
"""
)
# Back in the queue, due now, from attempt 0; the log says pending again.
REPLAY = """
WITH chosen AS (
    SELECT q.seq FROM delivery_queue q JOIN deliveries d ON d.delivery_id = q.delivery_id
    WHERE q.state = 'dead' AND ($1::text IS NULL OR d.consumer_id = $1)
      AND ($2::text IS NULL OR q.delivery_id = $2)
      AND ($3::text IS NULL OR q.subscription_id = $3)
      AND ($4::timestamptz IS NULL OR q.dead_at >= $4)
      AND ($5::timestamptz IS NULL OR q.dead_at < $5)
    FOR UPDATE OF q
),
revived AS (
    UPDATE delivery_queue q SET state = 'waiting', attempt = 0, next_attempt_at = now(),
        dead_at = NULL
    FROM chosen WHERE q.seq = chosen.seq
    RETURNING q.delivery_id
)
UPDATE deliveries d SET status = 'pending'
FROM revived WHERE d.delivery_id = revived.delivery_id
RETURNING d.delivery_id
"""


def _owner(caller: Principal) -> str | None:
    return None if caller.is_operator else caller.org_id


def _delivery(caller: Principal, row: Any) -> dict[str, Any]:
    values = {key: row[key] for key in Delivery.model_fields}
    values["agreement_ids"] = list(row["agreement_ids"])
    values["consent_ids"] = list(row["consent_ids"])
    # The consumer's endpoint errors are its own business, not its publisher's.
    if not caller.is_operator and row["consumer_id"] != caller.org_id:
        values["last_error"] = None
    return values


def _text(value: str | None) -> str | None:
    """A filter PostgreSQL cannot hold matches nothing; None: no filter."""
    return value if value is None or storable(value) else "\x01unmatchable"


async def list_deliveries(
    pool: Pool,
    caller: Principal,
    *,
    subscription_id: str | None,
    dataset_id: str | None,
    status: DeliveryStatus | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after: str | None,
) -> DeliveryPage:
    require_read(caller)
    check_range(since, until)
    before_at, before_id = None, None
    if after is not None:
        at, last_id = decode_cursor(after, 2)
        before_at, before_id = cursor_time(at), str(last_id)
    rows = await pool.fetch(
        LIST_DELIVERIES,
        _owner(caller),
        _text(subscription_id),
        _text(dataset_id),
        status,
        since,
        until,
        before_at,
        before_id,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = None
    if more and rows:
        cursor = encode_cursor(rows[-1]["created_at"].isoformat(), rows[-1]["delivery_id"])
    return DeliveryPage(items=[Delivery(**_delivery(caller, r)) for r in rows], next=cursor)


async def get_delivery(pool: Pool, caller: Principal, delivery_id: str) -> Delivery:
    require_read(caller)
    row = None
    if storable(delivery_id):
        row = await pool.fetchrow(SELECT_DELIVERY, _owner(caller), delivery_id)
    if row is None:
        raise DeliveryNotFound(f"no delivery {delivery_id!r}", delivery_id=delivery_id[:200])
    return Delivery(**_delivery(caller, row))


async def list_dead_letters(
    pool: Pool,
    caller: Principal,
    *,
    subscription_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after: str | None,
) -> DeadLetterPage:
    require_read(caller)
    check_range(since, until)
    after_seq = None
    if after is not None:
        (seq,) = decode_cursor(after, 1)
        if not isinstance(seq, int) or not 0 <= seq < 2**63:
            raise InvalidCursor("`after` is not a cursor this API gave")
        after_seq = seq
    rows = await pool.fetch(
        LIST_DEAD, _owner(caller), _text(subscription_id), since, until, after_seq, limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        DeadLetter(**_delivery(caller, r), attempt=r["attempt"], dead_at=r["dead_at"]) for r in rows
    ]
    return DeadLetterPage(
        items=items, next=encode_cursor(rows[-1]["seq"]) if more and rows else None
    )


async def replay_one(pool: Pool, caller: Principal, delivery_id: str) -> Replayed:
    caller.require(WRITE_SCOPE)
    replayed = 0
    if storable(delivery_id):
        rows = await pool.fetch(REPLAY, _owner(caller), delivery_id, None, None, None)
        replayed = len(rows)
    if not replayed:
        raise DeadLetterNotFound(f"no dead letter {delivery_id!r}", delivery_id=delivery_id[:200])
    return Replayed(replayed=replayed)


async def replay_range(pool: Pool, caller: Principal, body: ReplayRange) -> Replayed:
    caller.require(WRITE_SCOPE)
    check_range(body.since, body.until)
    rows = await pool.fetch(
        REPLAY, _owner(caller), None, body.subscription_id, body.since, body.until
    )
    return Replayed(replayed=len(rows))
