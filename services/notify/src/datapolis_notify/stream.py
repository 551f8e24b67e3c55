"""Server-sent events: a subscription's records, read live from its dataset's
topic and sent to one client while, and only while, it is entitled to them.

Each record is filtered, decided by the entitlement view (agreement, and for
a personal dataset the subject's consent) and projected (the agreement's
fields, narrowed by the subscription's) before it leaves, exactly as the
other channels do. The event id is the stream's position after the record:
the next offset of every partition of the topic, so a client that reconnects
with ``Last-Event-ID`` continues exactly after the last event it received,
with nothing missed and nothing repeated.

A record whose subject has no active consent is skipped. When the consumer's
entitlement to the dataset ends (agreement revoked, terminated or expired,
dataset retired), the stream sends one ``end`` event with the reason and
stops: it re-checks at each record, whenever the view tells it something
changed, and at least every ``recheck_interval_s``. While the view is not
current, a record that needs an entitlement is held (neither sent nor
skipped) until it is.

This module knows neither HTTP nor Kafka: the route and the topic reader are
the edges (``api/stream.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from datapolis_notify.ports import (
    DatasetView,
    EntitlementView,
    NotEntitled,
    RefusalReason,
)
from datapolis_notify.projection import matches, project, subject_id
from datapolis_notify.subscriptions import SubscriptionNotFound, storable
from datapolis_shared.errors import Conflict, Forbidden, InvalidInput, Overloaded
from datapolis_shared.postgres.pool import Pool

# A refusal that holds for every record of the dataset: the stream ends.
ENDING_REASONS: frozenset[RefusalReason] = frozenset(
    {"unknown-dataset", "dataset-retired", "no-active-agreement", "purpose-not-agreed"}
)
# The longest ``Last-Event-ID`` read: some 120 partitions' worth. A request
# with one just too long in the header and in the query (percent-encoded,
# up to three times longer) stays within the services' header limit
# (16 KiB), so it is this 422 rather than a 431.
MAX_EVENT_ID_CHARS = 2_048
_EVENT_ID = re.compile(r"\d{1,6}:\d{1,19}(,\d{1,6}:\d{1,19})*")


# --- errors ---------------------------------------------------------------


class NotStreamable(Conflict):
    code = "subscription-not-streamable"


class InvalidEventId(InvalidInput):
    code = "invalid-last-event-id"


class NotEntitledToStream(Forbidden):
    code = "not-entitled"


class TooManyStreams(Overloaded):
    code = "too-many-streams"


# --- position -------------------------------------------------------------

Position = dict[int, int]


def encode_position(position: Mapping[int, int]) -> str:
    """``0:17,1:5``: the next offset to send of each partition."""
    return ",".join(f"{partition}:{offset}" for partition, offset in sorted(position.items()))


def parse_event_id(text: str) -> Position:
    """The position an event id names; :class:`InvalidEventId` if it names none."""
    if len(text) > MAX_EVENT_ID_CHARS or not _EVENT_ID.fullmatch(text):
        raise InvalidEventId(
            "Last-Event-ID is not an id this stream sent: expected `<partition>:<offset>` "
            "pairs separated by commas, e.g. `0:17,1:5`"
        )
    position: Position = {}
    for pair in text.split(","):
        partition, _, offset = pair.partition(":")
        if int(partition) in position:
            raise InvalidEventId(f"Last-Event-ID names partition {partition} twice")
        position[int(partition)] = int(offset)
    return position


# --- subscriptions --------------------------------------------------------

SELECT_SUBSCRIPTION = """
SELECT subscription_id, consumer_id, dataset_id, channel, purpose, fields, filter, status,
       notifications
FROM subscriptions WHERE subscription_id = $1
"""


@dataclass(frozen=True, slots=True)
class StreamSubscription:
    subscription_id: str
    consumer_id: str
    dataset_id: str
    purpose: str | None
    # None: every field the agreement allows.
    fields: frozenset[str] | None
    filter: Mapping[str, Any]
    # What it is told of besides records: 'agreements', 'datasets'.
    notifications: frozenset[str] = frozenset()


async def load_subscription(
    pool: Pool, subscription_id: str, *, org_id: str, is_operator: bool
) -> StreamSubscription:
    """The ``sse`` subscription ``subscription_id`` of ``org_id`` (any
    organisation's for the operator). Another organisation's is not found,
    so its existence is not revealed."""
    row = (
        await pool.fetchrow(SELECT_SUBSCRIPTION, subscription_id)
        if storable(subscription_id)
        else None
    )
    if row is None or (row["consumer_id"] != org_id and not is_operator):
        raise SubscriptionNotFound(
            f"no subscription {subscription_id!r} of yours", subscription_id=subscription_id[:200]
        )
    if row["channel"] != "sse" or row["dataset_id"] is None or row["status"] != "active":
        raise NotStreamable(
            "only an active subscription of channel `sse` to a dataset can be streamed",
            channel=row["channel"],
        )
    raw_filter = row["filter"]
    # asyncpg hands JSONB over as text unless a codec is installed.
    filter_ = json.loads(raw_filter) if isinstance(raw_filter, str) else dict(raw_filter or {})
    fields = row["fields"]
    return StreamSubscription(
        subscription_id=row["subscription_id"],
        consumer_id=row["consumer_id"],
        dataset_id=row["dataset_id"],
        purpose=row["purpose"],
        fields=frozenset(fields) if fields is not None else None,
        filter=filter_,
        notifications=frozenset(row["notifications"] or ()),
    )


# --- concurrency ----------------------------------------------------------


class StreamSlots:
    """At most ``per_org`` open streams per organisation in this process."""

    def __init__(self, per_org: int) -> None:
        self._per_org = per_org
        self._open: dict[str, int] = {}

    def open_streams(self, org_id: str) -> int:
        return self._open.get(org_id, 0)

    def acquire(self, org_id: str) -> None:
        if self._open.get(org_id, 0) >= self._per_org:
            raise TooManyStreams(
                f"at most {self._per_org} open streams per organisation; close one first",
                retry_after_s=5,
                max_streams=self._per_org,
            )
        self._open[org_id] = self._open.get(org_id, 0) + 1

    def release(self, org_id: str) -> None:
        left = self._open.get(org_id, 0) - 1
        if left > 0:
            self._open[org_id] = left
        else:
            self._open.pop(org_id, None)

    @contextlib.contextmanager
    def held(self, org_id: str) -> Iterator[None]:
        self.acquire(org_id)
        try:
            yield
        finally:
            self.release(org_id)


# --- records --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One record of a dataset topic, as read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int | None


class RecordReader(Protocol):
    """Reads a topic's records from a position (the Kafka edge implements it)."""

    def position(self) -> Position:
        """The next offset of every partition it reads, as it started."""
        ...

    async def fetch(self, max_wait_s: float) -> list[TopicRecord]:
        """The next records, in order within each partition; an empty list
        after ``max_wait_s`` without any."""
        ...


class ChangeSource(Protocol):
    """A view that tells its listeners when its state changed."""

    def on_change(self, callback: Callable[..., Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class RecordEvent:
    # The stream's position after this record: the SSE ``id``.
    event_id: str
    cloudevent: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EndEvent:
    reason: str


@dataclass(frozen=True, slots=True)
class NoticeEvent:
    """A notification: a structured CloudEvent of the change. It carries no
    SSE id (the stream's position stays the last record's), and one missed
    while disconnected is not sent again: a webhook subscription is the
    durable way to receive them."""

    cloudevent: dict[str, Any]


StreamEvent = RecordEvent | EndEvent | NoticeEvent

# Notified on the `datasets` notification: the dataset's schema changed, or
# it was retired.
DATASET_NOTICES = frozenset(
    {"org.datapolis.catalog.schema.added.v1", "org.datapolis.catalog.dataset.retired.v1"}
)


def notice_for(change: Any, subscription: StreamSubscription) -> dict[str, Any] | None:
    """The CloudEvent a stream sends for a change of the entitlement view
    (``entitlements.view.Change``), if its subscription asked for it: a
    change of the consumer's agreement on the dataset (`agreements`), or a
    schema change or retirement of the dataset (`datasets`)."""
    event = getattr(change, "event", None)
    after = getattr(change, "after", None)
    if event is None or after is None:
        return None
    kind = getattr(change, "kind", None)
    wanted = subscription.notifications
    if kind == "agreement":
        relevant = (
            "agreements" in wanted
            and getattr(after, "consumer_id", None) == subscription.consumer_id
            and getattr(after, "dataset_id", None) == subscription.dataset_id
        )
    elif kind == "dataset":
        view = getattr(after, "view", None)
        relevant = (
            "datasets" in wanted
            and getattr(view, "dataset_id", None) == subscription.dataset_id
            and event.type in DATASET_NOTICES
        )
    else:
        relevant = False
    if not relevant:
        return None
    notice: dict[str, Any] = event.to_cloudevent().model_dump(mode="json", exclude_none=True)
    return notice


@dataclass(frozen=True, slots=True)
class Send:
    cloudevent: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Skip:
    why: Literal["not-json", "filtered", "no-subject", "no-active-consent"]


@dataclass(frozen=True, slots=True)
class Hold:
    """The view is not current: ask again when it is."""


@dataclass(frozen=True, slots=True)
class End:
    reason: RefusalReason


Verdict = Send | Skip | Hold | End


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", errors="replace")
    return None


def cloudevent(record: TopicRecord, data: dict[str, Any]) -> dict[str, Any]:
    """The structured CloudEvent sent for ``record`` with ``data`` (projected)."""
    headers = record.headers
    time = _header(headers, "ce_time")
    if time is None and record.timestamp_ms is not None:
        time = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC).isoformat()
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"{record.topic}:{record.partition}:{record.offset}",
        "source": _header(headers, "ce_source") or f"kafka:{record.topic}",
        "type": _header(headers, "ce_type") or "org.datapolis.record",
        "subject": record.key.decode("utf-8", errors="replace")
        if record.key is not None
        else _header(headers, "ce_subject"),
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    }
    return {name: value for name, value in event.items() if value is not None}


def stream_refusal(
    view: EntitlementView, subscription: StreamSubscription, now: datetime
) -> RefusalReason | None:
    """Why the subscription's stream must end now, if it must: a refusal
    that holds whatever the record. None while it may go on (including
    while the view is not current: then each record is held)."""
    decision = view.decide(
        dataset_id=subscription.dataset_id,
        consumer_id=subscription.consumer_id,
        purpose=subscription.purpose,
        subject_id=None,
        now=now,
    )
    if isinstance(decision, NotEntitled) and decision.reason in ENDING_REASONS:
        return decision.reason
    return None


def _refused(reason: RefusalReason) -> Verdict:
    if reason == "state-not-current":
        return Hold()
    if reason == "no-subject":
        return Skip("no-subject")
    if reason == "no-active-consent":
        return Skip("no-active-consent")
    return End(reason)


def judge(
    record: TopicRecord,
    *,
    subscription: StreamSubscription,
    dataset: DatasetView | None,
    view: EntitlementView,
    now: datetime,
) -> Verdict:
    """What to do with one record."""
    try:
        value = json.loads(record.value) if record.value is not None else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        # Ingest writes JSON objects only: anything else is not a record.
        return Skip("not-json")
    if not matches(value, subscription.filter):
        return Skip("filtered")
    subject_field = dataset.subject_field if dataset is not None else None
    decision = view.decide(
        dataset_id=subscription.dataset_id,
        consumer_id=subscription.consumer_id,
        purpose=subscription.purpose,
        subject_id=subject_id(value, subject_field),
        now=now,
    )
    if isinstance(decision, NotEntitled):
        return _refused(decision.reason)
    return Send(cloudevent(record, project(value, decision.fields, subscription.fields)))


class Wakeup:
    """The view's change listener for one stream: wakes it, and keeps the
    notifications it is to send (``notice``: from a change to a CloudEvent
    or None)."""

    def __init__(self, notice: Callable[[Any], dict[str, Any] | None] = lambda _: None) -> None:
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._notice = notice
        self.notices: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **_: Any) -> None:
        notice = self._notice(args[0]) if args else None
        # The view may call from its feed's task or from another thread.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake(notice)
        else:
            self._loop.call_soon_threadsafe(self._wake, notice)

    def _wake(self, notice: dict[str, Any] | None) -> None:
        if notice is not None:
            self.notices.append(notice)
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)


@dataclass
class RecordStream:
    """One client's stream of a subscription's records."""

    subscription: StreamSubscription
    view: EntitlementView
    reader: RecordReader
    wakeup: Wakeup
    recheck_interval_s: float = 0.2
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Told what became of each record: "sent", "held" or why it was skipped.
    count: Callable[[str], None] = lambda _: None

    async def events(self) -> AsyncIterator[StreamEvent]:
        position = dict(self.reader.position())
        batch: list[TopicRecord] = []
        fetching: asyncio.Task[list[TopicRecord]] | None = None
        try:
            while True:
                self.wakeup.clear()
                # Before the end they may explain (an agreement revoked).
                while self.wakeup.notices:
                    yield NoticeEvent(self.wakeup.notices.pop(0))
                reason = stream_refusal(self.view, self.subscription, self.clock())
                if reason is not None:
                    yield EndEvent(reason)
                    return
                if not batch:
                    if fetching is None:
                        fetching = asyncio.ensure_future(self.reader.fetch(self.recheck_interval_s))
                    # A change of the view wakes the stream before the fetch
                    # returns, so an entitlement's end is seen at once.
                    waking = asyncio.ensure_future(self.wakeup.wait(self.recheck_interval_s))
                    await asyncio.wait({fetching, waking}, return_when=asyncio.FIRST_COMPLETED)
                    waking.cancel()
                    if fetching.done():
                        batch = list(fetching.result())
                        fetching = None
                    continue
                record = batch[0]
                verdict = judge(
                    record,
                    subscription=self.subscription,
                    dataset=self.view.dataset(self.subscription.dataset_id),
                    view=self.view,
                    now=self.clock(),
                )
                if isinstance(verdict, Hold):
                    self.count("held")
                    await self.wakeup.wait(self.recheck_interval_s)
                    continue
                if isinstance(verdict, End):
                    yield EndEvent(verdict.reason)
                    return
                batch.pop(0)
                position[record.partition] = record.offset + 1
                if isinstance(verdict, Skip):
                    self.count(verdict.why)
                    continue
                self.count("sent")
                yield RecordEvent(encode_position(position), verdict.cloudevent)
        finally:
            if fetching is not None:
                fetching.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetching
