"""The engine's PostgreSQL: subscriptions read, the delivery log, the
durable queue, endpoint health. SQL lives here and nowhere else in the
engine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from datapolis_notify.ports import Channel, SigningKey, WebhookEndpoint
from datapolis_shared.postgres.pool import Connection, Pool

DeliveryStatus = Literal["delivered", "pending", "dead", "withheld"]


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    consumer_id: str
    # None: notifications only.
    dataset_id: str | None
    channel: Channel
    url: str | None
    purpose: str | None
    fields: frozenset[str] | None
    filter: dict[str, Any]
    batch_max_records: int
    batch_linger_ms: int
    created_at: datetime
    # The dataset topic, as notify's projection of the catalog knows it.
    topic_name: str | None
    publisher_id: str | None
    keys: tuple[SigningKey, ...] = ()

    def endpoint(self) -> WebhookEndpoint:
        return WebhookEndpoint(self.subscription_id, self.url or "", self.keys)


ACTIVE_SUBSCRIPTIONS = """
SELECT s.subscription_id, s.consumer_id, s.dataset_id, s.channel, s.url, s.purpose,
       s.fields, s.filter, s.batch_max_records, s.batch_linger_ms, s.created_at,
       d.topic_name, d.publisher_id,
       COALESCE(
           (SELECT array_agg(k.secret_id || ' ' || k.scheme || ' ' || k.secret
                             ORDER BY k.created_at)
              FROM subscription_secrets k
             WHERE k.subscription_id = s.subscription_id
               AND (k.expires_at IS NULL OR k.expires_at > now())),
           '{}') AS signing_keys
  FROM subscriptions s
  LEFT JOIN datasets d ON d.dataset_id = s.dataset_id
 WHERE s.status = 'active' AND s.channel IN ('webhook', 'kafka')
"""


async def active_subscriptions(pool: Pool) -> list[Subscription]:
    rows = await pool.fetch(ACTIVE_SUBSCRIPTIONS)
    subscriptions = []
    for row in rows:
        keys = []
        for packed in row["signing_keys"]:
            secret_id, scheme, secret = packed.split(" ", 2)
            keys.append(SigningKey(secret_id, "v1a" if scheme == "v1a" else "v1", secret))
        filter_ = row["filter"]
        subscriptions.append(
            Subscription(
                subscription_id=row["subscription_id"],
                consumer_id=row["consumer_id"],
                dataset_id=row["dataset_id"],
                channel=row["channel"],
                url=row["url"],
                purpose=row["purpose"],
                fields=None if row["fields"] is None else frozenset(row["fields"]),
                filter=json.loads(filter_) if isinstance(filter_, str) else dict(filter_),
                batch_max_records=row["batch_max_records"],
                batch_linger_ms=row["batch_linger_ms"],
                created_at=row["created_at"],
                topic_name=row["topic_name"],
                publisher_id=row["publisher_id"],
                keys=tuple(keys),
            )
        )
    return subscriptions


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One row of the delivery log, as it stands after an attempt."""

    delivery_id: str
    subscription_id: str
    consumer_id: str
    publisher_id: str | None
    dataset_id: str | None
    channel: str
    kind: Literal["records", "notification"]
    event_type: str | None
    record_count: int
    agreement_ids: Sequence[str]
    consent_ids: Sequence[str]
    status: DeliveryStatus
    attempts: int
    last_status: int | None
    last_error: str | None
    attempted_at: datetime | None

    def args(self) -> tuple[Any, ...]:
        return (
            self.delivery_id,
            self.subscription_id,
            self.consumer_id,
            self.publisher_id,
            self.dataset_id,
            self.channel,
            self.kind,
            self.event_type,
            self.record_count,
            list(self.agreement_ids),
            list(self.consent_ids),
            self.status,
            self.attempts,
            self.last_status,
            self.last_error,
            self.attempted_at,
        )


UPSERT_DELIVERY = """
INSERT INTO deliveries AS d (delivery_id, subscription_id, consumer_id, publisher_id, dataset_id,
                             channel, kind, event_type, record_count, agreement_ids, consent_ids,
                             status, attempts, last_status, last_error, last_attempt_at,
                             delivered_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text[], $11::text[], $12::text, $13, $14,
        $15, $16::timestamptz, CASE WHEN $12::text = 'delivered' THEN $16::timestamptz END)
ON CONFLICT (delivery_id) DO UPDATE SET
    record_count = EXCLUDED.record_count,
    -- A notification's ids are those of the change it tells of, written
    -- when it is queued; its attempts rely on no agreement of their own.
    agreement_ids = CASE WHEN d.kind = 'notification' THEN d.agreement_ids
                         ELSE EXCLUDED.agreement_ids END,
    consent_ids = CASE WHEN d.kind = 'notification' THEN d.consent_ids
                       ELSE EXCLUDED.consent_ids END,
    status = EXCLUDED.status,
    attempts = GREATEST(d.attempts, EXCLUDED.attempts),
    last_status = EXCLUDED.last_status,
    last_error = EXCLUDED.last_error,
    last_attempt_at = EXCLUDED.last_attempt_at,
    delivered_at = COALESCE(EXCLUDED.delivered_at, d.delivered_at)
"""


@dataclass
class HealthDelta:
    """An endpoint's attempts since the last flush, summed."""

    attempts: int = 0
    failures: int = 0
    # Failures since the last success in this window (all of them if none).
    consecutive: int = 0
    had_success: bool = False
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure_reason: str | None = None
    # The first failure after the last success in this window.
    failing_since: datetime | None = None

    def success(self, at: datetime) -> None:
        self.attempts += 1
        self.had_success = True
        self.consecutive = 0
        self.failing_since = None
        self.last_success_at = at

    def failure(self, at: datetime, reason: str) -> None:
        self.attempts += 1
        self.failures += 1
        self.consecutive += 1
        if self.failing_since is None:
            self.failing_since = at
        self.last_failure_at = at
        self.last_failure_reason = reason[:500]


UPSERT_HEALTH = """
INSERT INTO endpoint_health AS h (subscription_id, attempts, failures, consecutive_failures,
                                  last_success_at, last_failure_at, last_failure_reason,
                                  failing_since, updated_at)
SELECT $1::text, $2::bigint, $3::bigint, $4::int, $5::timestamptz, $6::timestamptz, $7::text,
       $8::timestamptz, now()
 WHERE EXISTS (SELECT 1 FROM subscriptions WHERE subscription_id = $1::text)
ON CONFLICT (subscription_id) DO UPDATE SET
    attempts = h.attempts + EXCLUDED.attempts,
    failures = h.failures + EXCLUDED.failures,
    consecutive_failures = CASE WHEN $9::boolean THEN EXCLUDED.consecutive_failures
                                ELSE h.consecutive_failures + EXCLUDED.consecutive_failures END,
    last_success_at = COALESCE(EXCLUDED.last_success_at, h.last_success_at),
    last_failure_at = COALESCE(EXCLUDED.last_failure_at, h.last_failure_at),
    last_failure_reason = COALESCE(EXCLUDED.last_failure_reason, h.last_failure_reason),
    failing_since = CASE WHEN $9::boolean THEN EXCLUDED.failing_since
                         ELSE COALESCE(h.failing_since, EXCLUDED.failing_since) END,
    updated_at = now()
RETURNING subscription_id, failing_since
"""


async def write_log(
    pool: Pool, entries: Sequence[LogEntry], health: dict[str, HealthDelta]
) -> list[tuple[str, datetime]]:
    """One transaction for a batch of log rows and health deltas; returns
    the endpoints failing, with since when."""
    failing: list[tuple[str, datetime]] = []
    async with pool.acquire() as conn, conn.transaction():
        if entries:
            await conn.executemany(UPSERT_DELIVERY, [e.args() for e in entries])
        for subscription_id, delta in sorted(health.items()):
            row = await conn.fetchrow(
                UPSERT_HEALTH,
                subscription_id,
                delta.attempts,
                delta.failures,
                delta.consecutive,
                delta.last_success_at,
                delta.last_failure_at,
                delta.last_failure_reason,
                delta.failing_since,
                delta.had_success,
            )
            if row is not None and row["failing_since"] is not None:
                failing.append((row["subscription_id"], row["failing_since"]))
    return failing


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    seq: int
    delivery_id: str
    subscription_id: str
    keys: list[str]
    payload: Any
    attempt: int
    created_at: datetime


@dataclass
class Enqueue:
    """A message to keep for a later attempt, with its log row."""

    log: LogEntry
    keys: Sequence[str]
    payload: Any
    attempt: int
    next_attempt_at: datetime
    dead: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


INSERT_QUEUE = """
INSERT INTO delivery_queue (delivery_id, subscription_id, keys, payload, attempt,
                            next_attempt_at, state, dead_at)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, CASE WHEN $7::boolean THEN 'dead' ELSE 'waiting' END,
        CASE WHEN $7::boolean THEN now() END)
ON CONFLICT (delivery_id) DO NOTHING
"""


async def enqueue(pool: Pool, items: Sequence[Enqueue]) -> None:
    """Durable when it returns: the log rows and the queue rows, in one
    transaction (a message read again after a crash finds its row and is not
    queued twice)."""
    if not items:
        return
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(UPSERT_DELIVERY, [i.log.args() for i in items])
        await conn.executemany(
            INSERT_QUEUE,
            [
                (
                    i.log.delivery_id,
                    i.log.subscription_id,
                    list(i.keys),
                    json.dumps(i.payload, default=str),
                    i.attempt,
                    i.next_attempt_at,
                    i.dead,
                )
                for i in items
            ],
        )


# Due rows whose keys no earlier waiting row of the same subscription
# carries (order per key), leased so no other replica claims them meanwhile.
# Only each subscription's first ``$4`` due rows are looked at: the rows
# queued behind a failing message of a dead endpoint (thousands, all due
# and all blocked) would otherwise be checked one by one at every poll.
CLAIM_DUE = """
WITH subs AS (
    SELECT DISTINCT subscription_id
      FROM delivery_queue
     WHERE state = 'waiting' AND next_attempt_at <= now()
       AND subscription_id <> ALL($3::text[])
),
candidates AS (
    SELECT c.seq
      FROM subs,
           LATERAL (
               SELECT q.seq, q.keys
                 FROM delivery_queue q
                WHERE q.subscription_id = subs.subscription_id
                  AND q.state = 'waiting' AND q.next_attempt_at <= now()
                ORDER BY q.seq
                LIMIT $4
           ) c
     WHERE NOT EXISTS (
           SELECT 1 FROM delivery_queue p
            WHERE p.subscription_id = subs.subscription_id AND p.state = 'waiting'
              AND p.seq < c.seq AND p.keys && c.keys)
),
due AS (
    SELECT q.seq
      FROM delivery_queue q JOIN candidates USING (seq)
     WHERE q.state = 'waiting' AND q.next_attempt_at <= now()
     ORDER BY q.seq
     LIMIT $1
       FOR UPDATE OF q SKIP LOCKED
)
UPDATE delivery_queue q
   SET next_attempt_at = now() + make_interval(secs => $2)
  FROM due
 WHERE q.seq = due.seq
RETURNING q.seq, q.delivery_id, q.subscription_id, q.keys, q.payload, q.attempt, q.created_at
"""
# Due rows looked at per subscription and poll.
CLAIM_WINDOW = 50


async def claim_due(
    pool: Pool, limit: int, lease_s: float, busy: Sequence[str] = ()
) -> list[QueuedMessage]:
    """Due messages, except those of the ``busy`` subscriptions."""
    rows = await pool.fetch(CLAIM_DUE, limit, lease_s, list(busy), CLAIM_WINDOW)
    claimed = []
    for row in rows:
        payload = row["payload"]
        claimed.append(
            QueuedMessage(
                seq=row["seq"],
                delivery_id=row["delivery_id"],
                subscription_id=row["subscription_id"],
                keys=list(row["keys"]),
                payload=json.loads(payload) if isinstance(payload, str) else payload,
                attempt=row["attempt"],
                created_at=row["created_at"],
            )
        )
    return sorted(claimed, key=lambda m: m.seq)


async def settle_queued(
    pool: Pool,
    message: QueuedMessage,
    log: LogEntry,
    *,
    done: bool,
    next_attempt_at: datetime | None = None,
    dead: bool = False,
) -> None:
    """After an attempt at a queued message: gone from the queue when done
    (delivered, withheld), dead, or waiting for ``next_attempt_at``."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(UPSERT_DELIVERY, *log.args())
        if done:
            await conn.execute("DELETE FROM delivery_queue WHERE seq = $1", message.seq)
        elif dead:
            await conn.execute(
                "UPDATE delivery_queue SET state = 'dead', dead_at = now(), attempt = $2 "
                "WHERE seq = $1",
                message.seq,
                log.attempts,
            )
        else:
            await conn.execute(
                "UPDATE delivery_queue SET attempt = $2, next_attempt_at = $3 WHERE seq = $1",
                message.seq,
                log.attempts,
                next_attempt_at,
            )


async def postpone(pool: Pool, seq: int, until: datetime) -> None:
    """Not attempted (the entitlement state is not current): later, same attempt."""
    await pool.execute("UPDATE delivery_queue SET next_attempt_at = $2 WHERE seq = $1", seq, until)


async def waiting_keys(pool: Pool) -> dict[str, set[str]]:
    """Per subscription, the keys that have a waiting message: later records
    of those keys queue behind it."""
    rows = await pool.fetch(
        "SELECT subscription_id, array_agg(DISTINCT k) AS keys "
        "FROM delivery_queue, unnest(keys) AS k WHERE state = 'waiting' GROUP BY subscription_id"
    )
    return {row["subscription_id"]: set(row["keys"]) for row in rows}


async def queue_depth(pool: Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT state, count(*) AS n FROM delivery_queue GROUP BY state")
    depth = {"waiting": 0, "dead": 0}
    depth.update({row["state"]: row["n"] for row in rows})
    return depth


ENDPOINT_DISABLED = "org.datapolis.notify.endpoint.disabled.v1"


async def disable(
    conn: Connection, subscription_id: str, reason: str, *, now: datetime
) -> list[Enqueue]:
    """Disable a subscription's endpoint (once), and queue an ``endpoint``
    notification to its owner's subscriptions that asked for one."""
    owner = await conn.fetchval(
        "UPDATE subscriptions SET status = 'disabled', disabled_reason = $2, "
        "disabled_at = $3, updated_at = $3 WHERE subscription_id = $1 AND status = 'active' "
        "RETURNING consumer_id",
        subscription_id,
        reason,
        now,
    )
    if owner is None:
        return []
    listeners = await conn.fetch(
        "SELECT subscription_id, channel FROM subscriptions WHERE consumer_id = $1 "
        "AND status = 'active' AND 'endpoint' = ANY(notifications) AND channel = 'webhook'",
        owner,
    )
    notices = []
    for listener in listeners:
        event_id = f"{subscription_id}:disabled:{int(now.timestamp())}"
        delivery_id = "msg_" + event_id.replace(":", "_")
        event = {
            "specversion": "1.0",
            "id": event_id,
            "source": "/datapolis/notify",
            "type": ENDPOINT_DISABLED,
            "subject": subscription_id,
            "time": now.isoformat(),
            "datacontenttype": "application/json",
            "data": {"subscription_id": subscription_id, "reason": reason},
        }
        notices.append(
            Enqueue(
                log=LogEntry(
                    delivery_id=delivery_id,
                    subscription_id=listener["subscription_id"],
                    consumer_id=owner,
                    publisher_id=None,
                    dataset_id=None,
                    channel=listener["channel"],
                    kind="notification",
                    event_type=ENDPOINT_DISABLED,
                    record_count=0,
                    agreement_ids=(),
                    consent_ids=(),
                    status="pending",
                    attempts=0,
                    last_status=None,
                    last_error=None,
                    attempted_at=None,
                ),
                keys=[],
                payload=event,
                attempt=0,
                next_attempt_at=now,
            )
        )
    return notices


async def disable_endpoint(pool: Pool, subscription_id: str, reason: str, *, now: datetime) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        notices = await disable(conn, subscription_id, reason, now=now)
        was_active = bool(
            await conn.fetchval(
                "SELECT status = 'disabled' AND disabled_at = $2 FROM subscriptions "
                "WHERE subscription_id = $1",
                subscription_id,
                now,
            )
        )
        for item in notices:
            await conn.execute(UPSERT_DELIVERY, *item.log.args())
            await conn.execute(
                INSERT_QUEUE,
                item.log.delivery_id,
                item.log.subscription_id,
                list(item.keys),
                json.dumps(item.payload),
                0,
                now,
                False,
            )
        return was_active


async def kill_waiting(pool: Pool, subscription_id: str, reason: str) -> None:
    """Messages of a disabled endpoint: dead (they can be replayed once it
    is enabled again), not retried against an endpoint that is gone."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE deliveries SET status = 'dead', last_error = $2 WHERE delivery_id IN "
            "(SELECT delivery_id FROM delivery_queue WHERE subscription_id = $1 "
            "AND state = 'waiting')",
            subscription_id,
            reason,
        )
        await conn.execute(
            "UPDATE delivery_queue SET state = 'dead', dead_at = now() "
            "WHERE subscription_id = $1 AND state = 'waiting'",
            subscription_id,
        )
