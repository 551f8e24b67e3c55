"""Partner notifications: consent's and catalog's changes told to the
parties they concern.

The notify worker follows ``datapolis.consent.events`` and
``datapolis.catalog.events`` (consumer group
``datapolis-notify-notifications``). For each event it writes, in one
transaction with the event's inbox row, one delivery log row (kind
``notification``) and one ``delivery_queue`` row, due now, per subscription
concerned; the delivery engine's queue then signs and sends them like the
test notification, with its retries, dead letters and replay. A redelivered
event finds its inbox row and writes nothing; the message ids are derived
from the event id and the subscription, so even a second writer could not
queue a message twice.

Who is told (active webhook and kafka subscriptions created before the
change, that asked for it):

- ``agreements``: the publisher of a dataset whose access is requested; the
  consumer whose agreement is granted, amended, refused, revoked,
  terminated or expires;
- ``datasets``: the subscriptions of a dataset given a new schema version
  or retired;
- ``themes``: the subscriptions following the theme of a newly registered
  dataset.

Each notification carries the ids, the dataset's slug, the reason and the
terms of the change, and nothing of another party's beyond what the change
itself is about.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord

from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.entitlements.state import top_level_fields
from datapolis_shared.errors import InvalidInput, Unavailable
from datapolis_shared.events.base import Event, parse_event
from datapolis_shared.events.catalog import DatasetRegistered, DatasetRetired, SchemaVersionAdded
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.events.consent import (
    AgreementAmended,
    AgreementExpired,
    AgreementGranted,
    AgreementRefused,
    AgreementRequested,
    AgreementRevoked,
    AgreementTerminated,
)
from datapolis_shared.kafka import ConsumerLoop
from datapolis_shared.postgres import inbox
from datapolis_shared.postgres.pool import Connection, Pool
from datapolis_shared.runtime import Runtime

log = logging.getLogger(__name__)

# The consumer's name: its inbox rows, readiness check
# (consumer:notifications) and consumer group carry it.
CONSUMER = "notifications"
SOURCE = "/datapolis/notify"
PREFIX = "org.datapolis.notify."

AgreementEvent = (
    AgreementRequested
    | AgreementGranted
    | AgreementAmended
    | AgreementRefused
    | AgreementRevoked
    | AgreementTerminated
    | AgreementExpired
)
_AGREEMENT_CHANGES: dict[type[Event], str] = {
    AgreementRequested: "requested",
    AgreementGranted: "granted",
    AgreementAmended: "amended",
    AgreementRefused: "refused",
    AgreementRevoked: "revoked",
    AgreementTerminated: "terminated",
    AgreementExpired: "expired",
}
NOTIFIED_SOURCE_TYPES = frozenset(
    [cls.type for cls in _AGREEMENT_CHANGES]
    + [DatasetRegistered.type, SchemaVersionAdded.type, DatasetRetired.type]
)

# The notifications' own types.
SCHEMA_ADDED = PREFIX + "dataset.schema.added.v1"
DATASET_RETIRED = PREFIX + "dataset.retired.v1"
DATASET_IN_THEME = PREFIX + "dataset.registered.v1"


def agreement_type(change: str) -> str:
    return f"{PREFIX}agreement.{change}.v1"


# Recipients: active subscriptions of a channel the engine sends on, that
# existed when the change was made (a subscription hears of changes from its
# creation on, never of older ones replayed).
_RECIPIENT = """
SELECT subscription_id, consumer_id, channel FROM subscriptions
 WHERE status = 'active' AND channel IN ('webhook', 'kafka') AND created_at <= $2
"""
ORGANISATION_LISTENERS = _RECIPIENT + (
    " AND consumer_id = $1 AND 'agreements' = ANY(notifications) ORDER BY subscription_id"
)
DATASET_LISTENERS = _RECIPIENT + (
    " AND dataset_id = $1 AND 'datasets' = ANY(notifications) ORDER BY subscription_id"
)
THEME_LISTENERS = _RECIPIENT + " AND $1 = ANY(themes) ORDER BY subscription_id"

INSERT_DELIVERY = """
INSERT INTO deliveries (delivery_id, subscription_id, consumer_id, publisher_id, dataset_id,
                        channel, kind, event_type, agreement_ids, status)
VALUES ($1, $2, $3, NULL, $4, $5, 'notification', $6, $7::text[], 'pending')
ON CONFLICT (delivery_id) DO NOTHING
"""
QUEUE_NOW = """
INSERT INTO delivery_queue (delivery_id, subscription_id, keys, payload, next_attempt_at)
VALUES ($1, $2, '{}', $3::jsonb, now())
ON CONFLICT (delivery_id) DO NOTHING
"""
TABLES_PRESENT = """
SELECT to_regclass('subscriptions') IS NOT NULL AND to_regclass('deliveries') IS NOT NULL
   AND to_regclass('delivery_queue') IS NOT NULL AND to_regclass('datasets') IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification, before it is addressed: who hears of it and what."""

    event_type: str
    # The query naming its recipients, and its first argument.
    listeners: str
    listener_key: str
    dataset_id: str
    agreement_id: str | None
    data: dict[str, Any]


def message_id(event_id: str, subscription_id: str) -> str:
    """The same for the same event and subscription, whoever computes it."""
    digest = hashlib.sha256(f"{event_id}\x00{subscription_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _iso(at: datetime) -> str:
    return at.isoformat()


def notice_for(event: Event, *, slug: str | None) -> Notice | None:
    """The notification an event makes, if any; ``slug``: the dataset's, as
    notify knows it (agreement events do not carry it)."""
    if isinstance(event, AgreementRequested | AgreementGranted | AgreementAmended):
        return _agreement_notice(
            event,
            slug,
            terms={
                "purposes": list(event.purposes),
                "fields": list(event.fields),
                "valid_from": _iso(event.valid_from),
                "valid_until": _iso(event.valid_until),
            },
        )
    if isinstance(
        event, AgreementRefused | AgreementRevoked | AgreementTerminated | AgreementExpired
    ):
        return _agreement_notice(event, slug, terms=None)
    if isinstance(event, SchemaVersionAdded):
        return Notice(
            SCHEMA_ADDED,
            DATASET_LISTENERS,
            event.dataset_id,
            event.dataset_id,
            None,
            {
                "dataset_id": event.dataset_id,
                "dataset": event.slug,
                "version": event.version,
                "major": event.major,
                "fields": sorted(top_level_fields(event.json_schema)),
            },
        )
    if isinstance(event, DatasetRetired):
        return Notice(
            DATASET_RETIRED,
            DATASET_LISTENERS,
            event.dataset_id,
            event.dataset_id,
            None,
            {"dataset_id": event.dataset_id, "dataset": event.slug},
        )
    if isinstance(event, DatasetRegistered) and event.theme:
        return Notice(
            DATASET_IN_THEME,
            THEME_LISTENERS,
            event.theme,
            event.dataset_id,
            None,
            {
                "dataset_id": event.dataset_id,
                "dataset": event.slug,
                "theme": event.theme,
                "access_level": event.access_level,
                "publisher_id": event.publisher_id,
            },
        )
    return None


def _agreement_notice(
    event: AgreementEvent, slug: str | None, *, terms: dict[str, Any] | None
) -> Notice:
    change = _AGREEMENT_CHANGES[type(event)]
    data: dict[str, Any] = {
        "agreement_id": event.agreement_id,
        "dataset_id": event.dataset_id,
        "dataset": slug,
        "publisher_org_id": event.publisher_org_id,
        "consumer_org_id": event.consumer_org_id,
        "status": change,
        "occurred_at": _iso(event.occurred_at),
    }
    if isinstance(event, AgreementRequested):
        # The request is addressed to the publisher, who decides on it.
        data["project_name"] = event.project_name
    if terms is not None:
        data["terms"] = terms
    if isinstance(event, AgreementRefused | AgreementRevoked | AgreementTerminated):
        data["reason"] = event.reason
    # A request is the publisher's to answer; every other change is the
    # consumer's to hear of.
    party = (
        event.publisher_org_id if isinstance(event, AgreementRequested) else event.consumer_org_id
    )
    return Notice(
        agreement_type(change),
        ORGANISATION_LISTENERS,
        party,
        event.dataset_id,
        event.agreement_id,
        data,
    )


async def queue_notices(
    conn: Connection, notice: Notice, *, event_id: str, at: datetime
) -> Sequence[str]:
    """Address ``notice`` and queue one message per recipient, in the
    caller's transaction; returns the message ids."""
    recipients = await conn.fetch(notice.listeners, notice.listener_key, at)
    queued = []
    for recipient in recipients:
        delivery_id = message_id(event_id, recipient["subscription_id"])
        cloudevent = {
            "specversion": "1.0",
            "id": delivery_id,
            "source": SOURCE,
            "type": notice.event_type,
            "subject": notice.agreement_id or notice.dataset_id,
            "time": _iso(at),
            "datacontenttype": "application/json",
            "data": notice.data,
        }
        await conn.execute(
            INSERT_DELIVERY,
            delivery_id,
            recipient["subscription_id"],
            recipient["consumer_id"],
            notice.dataset_id,
            recipient["channel"],
            notice.event_type,
            [notice.agreement_id] if notice.agreement_id else [],
        )
        await conn.execute(
            QUEUE_NOW,
            delivery_id,
            recipient["subscription_id"],
            json.dumps(cloudevent, separators=(",", ":")),
        )
        queued.append(delivery_id)
    return queued


class Notifications:
    """Turns consent's and catalog's events into queued notifications."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def on_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        envelope = from_structured(record.value or b"")
        if envelope.type not in NOTIFIED_SOURCE_TYPES:
            return
        # A change that does not parse goes to the dead letters (the loop's
        # rule for InvalidInput): it notifies no one rather than someone wrongly.
        event = parse_event(envelope)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if not await inbox.first_time(conn, CONSUMER, envelope.id):
                    return
                slug = getattr(event, "slug", None)
                if slug is None:
                    slug = await conn.fetchval(
                        "SELECT slug FROM datasets WHERE dataset_id = $1",
                        getattr(event, "dataset_id", None),
                    )
                notice = notice_for(event, slug=slug)
                if notice is not None:
                    await queue_notices(conn, notice, event_id=envelope.id, at=envelope.time)
        except InvalidInput:
            raise
        except Exception:
            await self.require_tables()
            raise

    async def require_tables(self) -> None:
        """``Unavailable`` unless notify's tables exist: the loop holds its
        record rather than parking it before the migration ran."""
        if not await self._pool.fetchval(TABLES_PRESENT):
            raise Unavailable(
                "notify's tables do not exist: run `python -m datapolis_notify migrate`"
            )


def start_notifications(runtime: Runtime, settings: EntitlementSettings) -> ConsumerLoop:
    """Follow consent's and catalog's events into queued notifications (the
    worker's job; call it once connected). One consumer group shared by the
    worker's replicas: each event is turned into notifications once."""
    notifications = Notifications(runtime.pool)
    return runtime.add_consumer(
        name=CONSUMER,
        topics=[settings.catalog_events_topic, settings.consent_events_topic],
        handler=notifications.on_record,
        dependencies=[notifications.require_tables],
    )
