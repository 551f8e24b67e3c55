"""Subscriptions: what a consumer organisation receives, where, and how it is signed.

A subscription names a dataset the consumer may receive (or none, for
notifications only), a channel (``webhook``, ``sse`` or ``kafka``), and
optionally a purpose, a projection (``fields``), an equality ``filter``,
notifications and themes. Creating one checks, against notify's projection of
catalog's and consent's state (``datasets``, ``agreements``), that the
consumer may receive the dataset now; the delivery worker checks it again at
every attempt, so a subscription outliving its agreement receives nothing.

Webhook subscriptions carry Standard Webhooks signing keys: ``v1`` (an
HMAC-SHA256 secret ``whsec_...``) or ``v1a`` (an Ed25519 key pair: the
private ``whsk_...`` stays here, the public ``whpk_...`` goes to the
receiver). A secret is shown once, when it is made. Rotating makes a new key
and lets the previous ones sign on until the overlap ends, so a receiver
switches without missing a message.

Only the consumer (and the operator) sees a subscription: to anyone else it
does not exist.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from datapolis_notify.ports import AccessLevel, Channel
from datapolis_notify.webhooks.signing import new_v1_secret, new_v1a_key_pair
from datapolis_notify.webhooks.targets import TargetPolicy, TargetRefused, check_url
from datapolis_shared.auth import Principal
from datapolis_shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from datapolis_shared.postgres.pool import Connection, Pool

# Creating, changing and deleting subscriptions needs this scope; reading
# also accepts `read`.
WRITE_SCOPE = "subscribe"
READ_SCOPES = ("read", WRITE_SCOPE)

SignatureScheme = Literal["v1", "v1a"]
NotificationKind = Literal["agreements", "datasets", "endpoint"]
SubscriptionStatus = Literal["active", "disabled"]
HealthState = Literal["healthy", "failing", "disabled"]

TEST_EVENT_TYPE = "org.datapolis.notify.test.v1"
DEFAULT_OVERLAP_S = 24 * 3600
MAX_OVERLAP_S = 7 * 24 * 3600
MAX_PAGE = 500
DEFAULT_PAGE = 100


# -- errors -------------------------------------------------------------------


class SubscriptionNotFound(NotFound):
    """No subscription by this id that the caller may see."""

    code = "subscription-not-found"


class DatasetNotFound(NotFound):
    """Notify has not heard of the dataset (from catalog's events), by id or slug."""

    code = "dataset-not-found"


class DatasetRetired(Conflict):
    code = "dataset-retired"


class NoActiveAgreement(Forbidden):
    """Shared and personal datasets: the consumer holds no granted agreement
    in its period on the dataset."""

    code = "no-active-agreement"


class PurposeRequired(InvalidInput):
    code = "purpose-required"


class PurposeNotAgreed(InvalidInput):
    code = "purpose-not-agreed"


class UnknownFields(InvalidInput):
    code = "unknown-fields"


class FilterFieldNotGranted(InvalidInput):
    code = "filter-field-not-granted"


class InvalidWebhookUrl(InvalidInput):
    code = "invalid-webhook-url"


class UrlRequired(InvalidInput):
    code = "url-required"


class WebhookOnly(InvalidInput):
    code = "webhook-only"


class DatasetRequired(InvalidInput):
    code = "dataset-required"


class NothingToDeliver(InvalidInput):
    code = "nothing-to-deliver"


class NotAWebhook(Conflict):
    code = "not-a-webhook"


class SubscriptionDisabled(Conflict):
    code = "subscription-disabled"


class InvalidCursor(InvalidInput):
    code = "invalid-cursor"


# -- text PostgreSQL can hold -------------------------------------------------


def storable(text: str) -> bool:
    """PostgreSQL text (and jsonb) holds neither NUL nor a lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _storable_text(text: str) -> str:
    if not storable(text):
        raise ValueError("text cannot hold the NUL character or a lone surrogate")
    return text


Text = Annotated[str, AfterValidator(_storable_text)]


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _date_time_text(value: Any) -> Any:
    # Pydantic reads a number (or a numeric string, as a query parameter is)
    # as a Unix time; the API documents RFC 3339 date-times only.
    if _numeric(value):
        raise ValueError("a date-time is RFC 3339 text, e.g. 2026-01-31T12:00:00Z")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_date_time_text)]
Name = Annotated[Text, Field(min_length=1, max_length=200)]
FilterValue = Annotated[Text, Field(max_length=1000)] | int | float | bool | None


# -- what callers send and get ------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Batch(_Body):
    """How records are grouped into one message: at most ``max_records``,
    sent at the latest ``linger_ms`` after the first one waits."""

    max_records: int = Field(default=100, ge=1, le=1000)
    linger_ms: int = Field(default=20, ge=0, le=10_000)


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


class NewSubscription(_Body):
    """A consumer's subscription. ``dataset`` left out: notifications only."""

    dataset: Name | None = Field(default=None, description="the dataset's id or slug")
    channel: Channel
    url: Annotated[Text, Field(min_length=1, max_length=2000)] | None = Field(
        default=None,
        description="webhook only: where records and notifications are POSTed",
        examples=["https://partner.example/hooks/datapolis"],
    )
    purpose: Name | None = Field(
        default=None,
        description="the purpose records are received under: required for a personal "
        "dataset, one of the agreement's purposes",
        examples=["dpv:ScientificResearch"],
    )
    fields: list[Name] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="top-level fields to receive (default: all the agreement allows)",
    )
    filter: dict[Name, FilterValue] = Field(
        default_factory=dict,
        max_length=50,
        description="equality on top-level fields: a record is delivered when every one matches",
        examples=[{"district": "Centre"}],
    )
    notifications: list[NotificationKind] = Field(default_factory=list, max_length=3)
    themes: list[Name] = Field(
        default_factory=list,
        max_length=50,
        description="a new dataset in one of these themes is notified",
    )
    batch: Batch = Field(default_factory=Batch)
    signature_scheme: SignatureScheme | None = Field(
        default=None, description="webhook only: `v1` (HMAC-SHA256, the default) or `v1a` (Ed25519)"
    )


class SubscriptionChange(_Body):
    """What PATCH changes; a member left out stays as it is. ``fields:
    null`` receives every field the agreement allows. ``status: active``
    re-enables a disabled endpoint and resets its health."""

    url: Annotated[Text, Field(min_length=1, max_length=2000)] | None = None
    fields: list[Name] | None = Field(default=None, min_length=1, max_length=1000)
    filter: dict[Name, FilterValue] | None = Field(default=None, max_length=50)
    batch: Batch | None = None
    notifications: list[NotificationKind] | None = Field(default=None, max_length=3)
    themes: list[Name] | None = Field(default=None, max_length=50)
    status: SubscriptionStatus | None = None

    @model_validator(mode="after")
    def _no_null_where_null_means_nothing(self) -> SubscriptionChange:
        for name in ("url", "filter", "batch", "notifications", "themes", "status"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null (leave it out to keep it)")
        return self


class Rotation(_Body):
    overlap_seconds: int = Field(
        default=DEFAULT_OVERLAP_S,
        ge=0,
        le=MAX_OVERLAP_S,
        description="how long the previous keys keep signing beside the new one",
    )
    signature_scheme: SignatureScheme | None = Field(
        default=None, description="the new key's scheme (default: the current key's)"
    )


class KeyInfo(BaseModel):
    """A signing key, without its secret."""

    model_config = ConfigDict(frozen=True)

    secret_id: str
    scheme: SignatureScheme
    public_key: str | None = Field(description="v1a: the `whpk_` key receivers verify with")
    created_at: datetime
    expires_at: datetime | None = Field(description="when it stops signing (after a rotation)")


class NewSecret(BaseModel):
    """A new signing key, shown once: ``secret`` (v1, `whsec_...`) for the
    receiver to verify HMACs with, or ``public_key`` (v1a, `whpk_...`)."""

    model_config = ConfigDict(frozen=True)

    secret_id: str
    scheme: SignatureScheme
    secret: str | None = None
    public_key: str | None = None


class Subscription(BaseModel):
    model_config = ConfigDict(frozen=True)

    subscription_id: str
    consumer_id: str
    dataset_id: str | None
    channel: Channel
    url: str | None
    purpose: str | None
    fields: list[str] | None
    filter: dict[str, Any]
    notifications: list[NotificationKind]
    themes: list[str]
    batch: Batch
    status: SubscriptionStatus
    disabled_reason: str | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    kafka_topic: str | None = Field(
        default=None, description="kafka channel: the topic it reads, deliver.<consumer>.<slug>"
    )
    keys: list[KeyInfo] = Field(default_factory=list, description="webhook: its signing keys")


class CreatedSubscription(Subscription):
    signing_key: NewSecret | None = Field(
        default=None, description="webhook: its first key, shown only now"
    )


class Page(BaseModel):
    items: list[Subscription]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class Health(BaseModel):
    subscription_id: str
    state: HealthState
    status: SubscriptionStatus
    disabled_reason: str | None
    attempts: int
    failures: int
    consecutive_failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure_reason: str | None
    failing_since: datetime | None


class TestQueued(BaseModel):
    delivery_id: str
    event_type: Literal["org.datapolis.notify.test.v1"] = "org.datapolis.notify.test.v1"


# -- the dataset and the consumer's right to it ------------------------------


@dataclass(frozen=True)
class KnownDataset:
    dataset_id: str
    slug: str
    publisher_id: str
    access_level: AccessLevel
    fields: frozenset[str]
    retired: bool


SELECT_DATASET = """
SELECT dataset_id, slug, publisher_id, access_level, fields, retired_at
FROM datasets
"""
DATASET_BY_ID = SELECT_DATASET + "WHERE dataset_id = $1"
# A slug names its live dataset; once every holder is retired, the latest.
DATASET_BY_SLUG = (
    SELECT_DATASET
    + "WHERE slug = $1 ORDER BY retired_at IS NULL DESC, registered_at DESC, dataset_id LIMIT 1"
)
# The consumer's agreements on the dataset that are granted and in their period.
ACTIVE_AGREEMENTS = """
SELECT agreement_id, purposes, fields FROM agreements
WHERE consumer_id = $1 AND dataset_id = $2 AND status = 'granted'
  AND (valid_from IS NULL OR valid_from <= now())
  AND (valid_until IS NULL OR valid_until > now())
"""


async def find_dataset(conn: Connection | Pool, dataset: str) -> KnownDataset:
    row = None
    if storable(dataset):
        row = await conn.fetchrow(DATASET_BY_ID, dataset)
        if row is None:
            row = await conn.fetchrow(DATASET_BY_SLUG, dataset)
    if row is None:
        raise DatasetNotFound(f"notify knows no dataset {dataset!r}", dataset=dataset)
    return KnownDataset(
        dataset_id=row["dataset_id"],
        slug=row["slug"],
        publisher_id=row["publisher_id"],
        access_level=row["access_level"],
        fields=frozenset(row["fields"]),
        retired=row["retired_at"] is not None,
    )


@dataclass(frozen=True)
class Grant:
    """What the consumer's active agreements allow together; ``None``
    purposes and fields: an open dataset, no agreement needed."""

    purposes: frozenset[str] | None
    fields: frozenset[str] | None


async def require_entitled(
    conn: Connection | Pool, consumer_id: str, dataset: KnownDataset, purpose: str | None
) -> Grant:
    if dataset.retired:
        raise DatasetRetired(f"dataset {dataset.slug!r} is retired", dataset_id=dataset.dataset_id)
    if dataset.access_level == "open":
        return Grant(None, None)
    rows = await conn.fetch(ACTIVE_AGREEMENTS, consumer_id, dataset.dataset_id)
    if not rows:
        raise NoActiveAgreement(
            f"no granted agreement of yours on dataset {dataset.slug!r} is in force",
            dataset_id=dataset.dataset_id,
        )
    purposes = frozenset(p for row in rows for p in row["purposes"])
    fields = frozenset(f for row in rows for f in row["fields"])
    if dataset.access_level == "personal" and purpose is None:
        raise PurposeRequired(
            "a personal dataset is received under one purpose: subjects consent per purpose",
            purposes=sorted(purposes),
        )
    if purpose is not None and purpose not in purposes:
        raise PurposeNotAgreed(
            f"purpose {purpose!r} is not among your agreement's", purposes=sorted(purposes)
        )
    return Grant(purposes, fields)


def check_fields(
    dataset: KnownDataset, grant: Grant, fields: Sequence[str] | None, filter: dict[str, Any]
) -> None:
    unknown = [f for f in _unique([*(fields or []), *filter]) if f not in dataset.fields]
    if unknown:
        raise UnknownFields("fields not in the dataset's current schema", fields=unknown[:50])
    if grant.fields is not None:
        # Filtering on a field the consumer may not receive would tell it the
        # field's values one question at a time.
        refused = [f for f in filter if f not in grant.fields]
        if refused:
            raise FilterFieldNotGranted(
                "a filter may only use fields your agreement grants", fields=refused[:50]
            )


# -- webhook targets -----------------------------------------------------------


def check_webhook_url(url: str, targets: TargetPolicy) -> None:
    """Refuse a URL notify will not call: not http(s), credentials in it,
    plain http, a loopback, private, link-local or metadata address (unless
    ``targets`` allows it). ``reason`` says which. What a name resolves to is
    vetted again by the sender at every connection."""
    if any(c.isspace() or not c.isprintable() for c in url):
        # A URL has none (RFC 3986); the client would fail at every attempt.
        raise InvalidWebhookUrl("a URL holds no spaces or control characters", reason="invalid-url")
    try:
        check_url(url, targets)
    except TargetRefused as refused:
        raise InvalidWebhookUrl(
            f"notify will not call this URL: {refused.detail}", reason=refused.reason
        ) from None


# -- keys ------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedKey:
    secret_id: str
    scheme: SignatureScheme
    secret: str  # kept: whsec_ (v1) or whsk_ (v1a)
    public_key: str | None  # v1a: whpk_

    def shown(self) -> NewSecret:
        if self.scheme == "v1":
            return NewSecret(secret_id=self.secret_id, scheme="v1", secret=self.secret)
        return NewSecret(secret_id=self.secret_id, scheme="v1a", public_key=self.public_key)


def generate_key(scheme: SignatureScheme) -> GeneratedKey:
    """A Standard Webhooks key, as the webhook signer reads it."""
    secret_id = f"key_{uuid.uuid4().hex}"
    if scheme == "v1":
        return GeneratedKey(secret_id, "v1", new_v1_secret(), None)
    private, public = new_v1a_key_pair()
    return GeneratedKey(secret_id, "v1a", private, public)


# -- Kafka channel -------------------------------------------------------------

_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def delivery_topic(consumer_id: str, slug: str) -> str:
    """The consumer's topic for one dataset: ``deliver.<consumer>.<slug>``.

    The slug, not the id, for the same reason as ``data.<slug>``: people and
    ACLs read it. A character Kafka refuses in a name becomes ``_``."""
    return f"deliver.{_TOPIC_UNSAFE.sub('_', consumer_id)}.{_TOPIC_UNSAFE.sub('_', slug)}"[:249]


# -- SQL -----------------------------------------------------------------------

_COLUMNS = """
s.subscription_id, s.consumer_id, s.dataset_id, s.channel, s.url, s.purpose, s.fields,
s.filter, s.notifications, s.themes, s.batch_max_records, s.batch_linger_ms, s.status,
s.disabled_reason, s.disabled_at, s.created_at, s.updated_at, d.slug
"""
_FROM = " FROM subscriptions s LEFT JOIN datasets d ON d.dataset_id = s.dataset_id "
SELECT_ONE = "SELECT" + _COLUMNS + _FROM + "WHERE s.subscription_id = $1"
LOCK_ONE = "SELECT consumer_id FROM subscriptions WHERE subscription_id = $1 FOR UPDATE"
# Keyset pagination on (created_at, subscription_id); $1: the consumer or NULL
# for every one (the operator).
LIST_PAGE = (
    "SELECT"
    + _COLUMNS
    + _FROM
    + """
WHERE ($1::text IS NULL OR s.consumer_id = $1)
  AND ($2::timestamptz IS NULL OR (s.created_at, s.subscription_id) > ($2, $3))
ORDER BY s.created_at, s.subscription_id
LIMIT $4
"""
)
INSERT = """
INSERT INTO subscriptions (
    subscription_id, consumer_id, dataset_id, channel, url, purpose, fields, filter,
    notifications, themes, batch_max_records, batch_linger_ms
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
"""
UPDATE = """
UPDATE subscriptions SET url = $2, fields = $3, filter = $4, notifications = $5, themes = $6,
    batch_max_records = $7, batch_linger_ms = $8, status = $9, disabled_reason = $10,
    disabled_at = $11, updated_at = now()
WHERE subscription_id = $1
"""
DELETE = "DELETE FROM subscriptions WHERE subscription_id = $1"
# Deliveries that would wait for a subscription that is gone: not sent.
WITHHOLD_QUEUED = """
UPDATE deliveries SET status = 'withheld', last_error = 'subscription deleted'
WHERE delivery_id IN (SELECT delivery_id FROM delivery_queue WHERE subscription_id = $1)
"""
DELETE_QUEUED = "DELETE FROM delivery_queue WHERE subscription_id = $1"
INSERT_KEY = """
INSERT INTO subscription_secrets (subscription_id, secret_id, scheme, secret, public_key)
VALUES ($1, $2, $3, $4, $5)
"""
SELECT_KEYS = """
SELECT secret_id, scheme, public_key, created_at, expires_at FROM subscription_secrets
WHERE subscription_id = $1 AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at, secret_id
"""
# The current keys of a page of subscriptions, in one query.
SELECT_KEYS_OF = """
SELECT subscription_id, secret_id, scheme, public_key, created_at, expires_at
FROM subscription_secrets
WHERE subscription_id = ANY($1::text[]) AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at, secret_id
"""
CURRENT_SCHEME = """
SELECT scheme FROM subscription_secrets WHERE subscription_id = $1
ORDER BY expires_at IS NULL DESC, created_at DESC LIMIT 1
"""
# Keys past their overlap sign nothing more: removed when the next rotation comes.
DROP_EXPIRED_KEYS = (
    "DELETE FROM subscription_secrets WHERE subscription_id = $1 AND expires_at <= now()"
)
# Never lengthens an overlap already running.
EXPIRE_KEYS = """
UPDATE subscription_secrets SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), $2)
WHERE subscription_id = $1
"""
RESET_HEALTH = "DELETE FROM endpoint_health WHERE subscription_id = $1"
SELECT_HEALTH = "SELECT * FROM endpoint_health WHERE subscription_id = $1"
INSERT_TEST_DELIVERY = """
INSERT INTO deliveries (delivery_id, subscription_id, consumer_id, publisher_id, dataset_id,
                        channel, kind, event_type, status)
VALUES ($1, $2, $3, NULL, NULL, $4, 'notification', $5, 'pending')
"""
QUEUE_NOW = """
INSERT INTO delivery_queue (delivery_id, subscription_id, keys, payload, next_attempt_at)
VALUES ($1, $2, '{}', $3::jsonb, now())
"""


def _from_row(row: Any, keys: Sequence[Any] = ()) -> dict[str, Any]:
    channel = row["channel"]
    slug = row["slug"]
    return {
        "subscription_id": row["subscription_id"],
        "consumer_id": row["consumer_id"],
        "dataset_id": row["dataset_id"],
        "channel": channel,
        "url": row["url"],
        "purpose": row["purpose"],
        "fields": None if row["fields"] is None else list(row["fields"]),
        "filter": orjson.loads(row["filter"]) if isinstance(row["filter"], str) else row["filter"],
        "notifications": list(row["notifications"]),
        "themes": list(row["themes"]),
        "batch": Batch(max_records=row["batch_max_records"], linger_ms=row["batch_linger_ms"]),
        "status": row["status"],
        "disabled_reason": row["disabled_reason"],
        "disabled_at": row["disabled_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "kafka_topic": delivery_topic(row["consumer_id"], slug)
        if channel == "kafka" and slug
        else None,
        "keys": [KeyInfo(**{name: k[name] for name in KeyInfo.model_fields}) for k in keys],
    }


# -- access ----------------------------------------------------------------------


def require_read(caller: Principal) -> None:
    if not caller.is_operator and not any(scope in caller.scopes for scope in READ_SCOPES):
        caller.require(WRITE_SCOPE)


def _not_found(subscription_id: str) -> SubscriptionNotFound:
    return SubscriptionNotFound(
        f"no subscription {subscription_id!r}", subscription_id=subscription_id[:200]
    )


async def _visible_row(conn: Connection | Pool, caller: Principal, subscription_id: str) -> Any:
    row = await conn.fetchrow(SELECT_ONE, subscription_id) if storable(subscription_id) else None
    if row is None or not (caller.is_operator or row["consumer_id"] == caller.org_id):
        raise _not_found(subscription_id)
    return row


async def _lock_own(conn: Connection, caller: Principal, subscription_id: str) -> Any:
    """The subscription's row, locked, if the caller may change it."""
    owner = await conn.fetchval(LOCK_ONE, subscription_id) if storable(subscription_id) else None
    if owner is None or not (caller.is_operator or owner == caller.org_id):
        raise _not_found(subscription_id)
    return await conn.fetchrow(SELECT_ONE, subscription_id)


# -- operations ----------------------------------------------------------------


async def create(
    pool: Pool, caller: Principal, body: NewSubscription, *, targets: TargetPolicy
) -> CreatedSubscription:
    caller.require(WRITE_SCOPE)
    _check_channel(body.channel, body.url, body.signature_scheme)
    if body.dataset is None:
        given = [
            name
            for name, value in (("purpose", body.purpose), ("fields", body.fields))
            if value is not None
        ] + (["filter"] if body.filter else [])
        if body.channel == "kafka" or given:
            raise DatasetRequired(
                "the kafka channel, a purpose, fields and a filter apply to a dataset's records",
                members=given or ["dataset"],
            )
        if not body.notifications and not body.themes:
            raise NothingToDeliver("without a dataset, name notifications or themes to receive")
    if body.url is not None:
        check_webhook_url(body.url, targets)
    subscription_id = str(uuid.uuid4())
    key = generate_key(body.signature_scheme or "v1") if body.channel == "webhook" else None
    async with pool.acquire() as conn, conn.transaction():
        dataset_id = None
        if body.dataset is not None:
            dataset = await find_dataset(conn, body.dataset)
            grant = await require_entitled(conn, caller.org_id, dataset, body.purpose)
            check_fields(dataset, grant, body.fields, body.filter)
            dataset_id = dataset.dataset_id
        await conn.execute(
            INSERT,
            subscription_id,
            caller.org_id,
            dataset_id,
            body.channel,
            body.url,
            body.purpose,
            None if body.fields is None else _unique(body.fields),
            orjson.dumps(body.filter).decode(),
            _unique(body.notifications),
            _unique(body.themes),
            body.batch.max_records,
            body.batch.linger_ms,
        )
        if key is not None:
            await conn.execute(
                INSERT_KEY, subscription_id, key.secret_id, key.scheme, key.secret, key.public_key
            )
        row = await conn.fetchrow(SELECT_ONE, subscription_id)
        keys = await conn.fetch(SELECT_KEYS, subscription_id)
    return CreatedSubscription(
        **_from_row(row, keys), signing_key=None if key is None else key.shown()
    )


def _check_channel(channel: Channel, url: str | None, scheme: SignatureScheme | None) -> None:
    if channel == "webhook":
        if url is None:
            raise UrlRequired("a webhook subscription needs a url")
    elif url is not None or scheme is not None:
        raise WebhookOnly("url and signature_scheme apply to the webhook channel only")


async def get(pool: Pool, caller: Principal, subscription_id: str) -> Subscription:
    require_read(caller)
    row = await _visible_row(pool, caller, subscription_id)
    keys = await pool.fetch(SELECT_KEYS, subscription_id)
    return Subscription(**_from_row(row, keys))


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidCursor("`after` is not a cursor this API gave") from None
    if not isinstance(parts, list) or len(parts) != arity:
        raise InvalidCursor("`after` is not a cursor this API gave")
    if not all(isinstance(p, str | int) and (not isinstance(p, str) or storable(p)) for p in parts):
        raise InvalidCursor("`after` is not a cursor this API gave")
    return parts


def cursor_time(value: Any) -> datetime:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidCursor("`after` is not a cursor this API gave")
    return when


async def list_page(pool: Pool, caller: Principal, *, limit: int, after: str | None) -> Page:
    require_read(caller)
    since, last_id = None, None
    if after is not None:
        at, last_id = decode_cursor(after, 2)
        since = cursor_time(at)
        last_id = str(last_id)
    owner = None if caller.is_operator else caller.org_id
    rows = await pool.fetch(LIST_PAGE, owner, since, last_id, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    keys: dict[str, list[Any]] = {}
    for key in await pool.fetch(SELECT_KEYS_OF, [row["subscription_id"] for row in rows]):
        keys.setdefault(key["subscription_id"], []).append(key)
    items = [Subscription(**_from_row(row, keys.get(row["subscription_id"], []))) for row in rows]
    last = rows[-1] if rows else None
    cursor = (
        encode_cursor(last["created_at"].isoformat(), last["subscription_id"])
        if more and last is not None
        else None
    )
    return Page(items=items, next=cursor)


async def update(
    pool: Pool,
    caller: Principal,
    subscription_id: str,
    change: SubscriptionChange,
    *,
    targets: TargetPolicy,
) -> Subscription:
    caller.require(WRITE_SCOPE)
    given = change.model_fields_set
    async with pool.acquire() as conn, conn.transaction():
        row = await _lock_own(conn, caller, subscription_id)
        current = _from_row(row)
        if "url" in given:
            if current["channel"] != "webhook":
                raise WebhookOnly("url applies to the webhook channel only")
            assert change.url is not None
            check_webhook_url(change.url, targets)
        fields = _unique(change.fields) if change.fields is not None else None
        fields = fields if "fields" in given else current["fields"]
        filter = change.filter if change.filter is not None else current["filter"]
        if current["dataset_id"] is None and (fields is not None or filter):
            raise DatasetRequired(
                "fields and a filter apply to a dataset's records", members=["dataset"]
            )
        if current["dataset_id"] is None and not _has_notifications(change, current):
            raise NothingToDeliver("without a dataset, name notifications or themes to receive")
        re_enabled = change.status == "active" and current["status"] == "disabled"
        if current["dataset_id"] is not None and (
            "fields" in given or "filter" in given or re_enabled
        ):
            dataset = await find_dataset(conn, current["dataset_id"])
            grant = await require_entitled(conn, row["consumer_id"], dataset, current["purpose"])
            check_fields(dataset, grant, fields, filter)
        status = change.status or current["status"]
        disabled_reason, disabled_at = current["disabled_reason"], current["disabled_at"]
        if status == "active":
            disabled_reason, disabled_at = None, None
        elif current["status"] == "active":
            disabled_reason, disabled_at = "disabled by its owner", datetime.now(UTC)
        batch = change.batch or current["batch"]
        await conn.execute(
            UPDATE,
            subscription_id,
            change.url if "url" in given else current["url"],
            fields,
            orjson.dumps(filter).decode(),
            _unique(change.notifications or [])
            if change.notifications is not None
            else current["notifications"],
            _unique(change.themes) if change.themes is not None else current["themes"],
            batch.max_records,
            batch.linger_ms,
            status,
            disabled_reason,
            disabled_at,
        )
        if re_enabled:
            await conn.execute(RESET_HEALTH, subscription_id)
        row = await conn.fetchrow(SELECT_ONE, subscription_id)
        keys = await conn.fetch(SELECT_KEYS, subscription_id)
    return Subscription(**_from_row(row, keys))


def _has_notifications(change: SubscriptionChange, current: dict[str, Any]) -> bool:
    notifications = (
        change.notifications if change.notifications is not None else current["notifications"]
    )
    themes = change.themes if change.themes is not None else current["themes"]
    return bool(notifications or themes)


async def delete(pool: Pool, caller: Principal, subscription_id: str) -> None:
    caller.require(WRITE_SCOPE)
    async with pool.acquire() as conn, conn.transaction():
        await _lock_own(conn, caller, subscription_id)
        await conn.execute(WITHHOLD_QUEUED, subscription_id)
        await conn.execute(DELETE_QUEUED, subscription_id)
        await conn.execute(DELETE, subscription_id)


async def rotate(
    pool: Pool, caller: Principal, subscription_id: str, rotation: Rotation
) -> NewSecret:
    """A new signing key; the current ones sign on until ``now + overlap``."""
    caller.require(WRITE_SCOPE)
    async with pool.acquire() as conn, conn.transaction():
        row = await _lock_own(conn, caller, subscription_id)
        if row["channel"] != "webhook":
            raise NotAWebhook("only webhook subscriptions have signing keys")
        scheme = rotation.signature_scheme or await conn.fetchval(CURRENT_SCHEME, subscription_id)
        key = generate_key(scheme or "v1")
        await conn.execute(DROP_EXPIRED_KEYS, subscription_id)
        until = datetime.now(UTC) + timedelta(seconds=rotation.overlap_seconds)
        await conn.execute(EXPIRE_KEYS, subscription_id, until)
        await conn.execute(
            INSERT_KEY, subscription_id, key.secret_id, key.scheme, key.secret, key.public_key
        )
    return key.shown()


async def health(pool: Pool, caller: Principal, subscription_id: str) -> Health:
    require_read(caller)
    sub = await _visible_row(pool, caller, subscription_id)
    row = await pool.fetchrow(SELECT_HEALTH, subscription_id)
    failing_since = row["failing_since"] if row else None
    state: HealthState = (
        "disabled" if sub["status"] == "disabled" else "failing" if failing_since else "healthy"
    )
    return Health(
        subscription_id=subscription_id,
        state=state,
        status=sub["status"],
        disabled_reason=sub["disabled_reason"],
        attempts=row["attempts"] if row else 0,
        failures=row["failures"] if row else 0,
        consecutive_failures=row["consecutive_failures"] if row else 0,
        last_success_at=row["last_success_at"] if row else None,
        last_failure_at=row["last_failure_at"] if row else None,
        last_failure_reason=row["last_failure_reason"] if row else None,
        failing_since=failing_since,
    )


async def queue_test(pool: Pool, caller: Principal, subscription_id: str) -> TestQueued:
    """A test notification for the endpoint, sent by the delivery worker
    like any other (signed, retried, logged)."""
    caller.require(WRITE_SCOPE)
    delivery_id = f"msg_{uuid.uuid4().hex}"
    async with pool.acquire() as conn, conn.transaction():
        row = await _lock_own(conn, caller, subscription_id)
        if row["status"] != "active":
            raise SubscriptionDisabled(
                "the subscription is disabled: re-enable it (PATCH status active) first"
            )
        event = {
            "specversion": "1.0",
            "id": delivery_id,
            "source": "/notify",
            "type": TEST_EVENT_TYPE,
            "subject": subscription_id,
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": {
                "subscription_id": subscription_id,
                "message": "a test notification: your endpoint receives datapolis",
            },
        }
        await conn.execute(
            INSERT_TEST_DELIVERY,
            delivery_id,
            subscription_id,
            row["consumer_id"],
            row["channel"],
            TEST_EVENT_TYPE,
        )
        await conn.execute(QUEUE_NOW, delivery_id, subscription_id, orjson.dumps(event).decode())
    return TestQueued(delivery_id=delivery_id)
