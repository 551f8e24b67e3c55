"""``GET /subscriptions/{id}/events``: a subscription's records as server-sent
events (see :mod:`datapolis_notify.stream`), and the topic reader it uses."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Header, Path, Query, Request
from prometheus_client import CollectorRegistry, Counter, Gauge
from sse_starlette import EventSourceResponse, ServerSentEvent

from datapolis_notify.api import problems as p
from datapolis_notify.ports import EntitlementView
from datapolis_notify.settings import NotifySettings
from datapolis_notify.stream import (
    MAX_EVENT_ID_CHARS,
    EndEvent,
    InvalidEventId,
    NotEntitledToStream,
    NoticeEvent,
    Position,
    RecordStream,
    StreamSlots,
    TopicRecord,
    Wakeup,
    load_subscription,
    notice_for,
    parse_event_id,
    stream_refusal,
)
from datapolis_notify.subscriptions import require_read
from datapolis_shared.errors import Unavailable
from datapolis_shared.http.app import Caller, RuntimeDep
from datapolis_shared.http.openapi import MISSING_SCOPE, ProblemCode, problem_responses
from datapolis_shared.http.strict_json import StrictJsonRoute
from datapolis_shared.kafka.options import client_options
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"

SUBSCRIPTION_NOT_STREAMABLE = ProblemCode(
    "subscription-not-streamable",
    409,
    "the subscription is not an active one of channel `sse` to a dataset",
    (("channel", "webhook"),),
)
INVALID_LAST_EVENT_ID = ProblemCode(
    "invalid-last-event-id",
    422,
    "`Last-Event-ID` (or `last_event_id`) is not an id this stream sent (`0:17,1:5`)",
)
NOT_ENTITLED = ProblemCode(
    "not-entitled",
    403,
    "the consumer may not receive the dataset now; `reason` says why",
    (("reason", "no-active-agreement"),),
)
TOO_MANY_STREAMS = ProblemCode(
    "too-many-streams",
    429,
    "the organisation has as many streams open as it may (`NOTIFY_SSE__MAX_STREAMS_PER_ORG`); "
    "retry after `Retry-After` seconds",
    (("max_streams", 10),),
    retry_after=True,
)

STREAM_DESCRIPTION = """\
A stream of server-sent events (`text/event-stream`), one per record of the
dataset that the subscription may receive now, filtered and projected:

```
id: 0:18,1:7
event: record
data: {"specversion":"1.0","id":"data.meters:0:17","source":"...","type":"...",\
"subject":"m-1","datacontenttype":"application/json","data":{"meter_id":"m-1","kwh":1.5}}
```

`id` is the stream's position after the record: send it back as
`Last-Event-ID` (or `?last_event_id=`) to resume right after it. A comment
line (`: ping`) comes every `NOTIFY_SSE__HEARTBEAT_S` seconds. When the
entitlement ends (agreement revoked, terminated or expired, dataset retired),
one `event: end` with `data: {"reason": "..."}` comes last and the stream
closes. A subscription that asked for notifications (`agreements`: its
agreement on the dataset changed; `datasets`: the dataset's schema changed or
it was retired) also gets `event: notification` with the change's CloudEvent,
without an `id`, while connected."""

SubscriptionId = Annotated[
    str,
    Path(description="the subscription's id", max_length=200, examples=["sub-0f8e7a52"]),
]
LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="resume after this event (its `id`); a new stream starts at the end",
        max_length=MAX_EVENT_ID_CHARS,
    ),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        description="the same as `Last-Event-ID`, for clients that cannot set headers",
        max_length=MAX_EVENT_ID_CHARS,
    ),
]

router = APIRouter(tags=["subscriptions"], route_class=StrictJsonRoute)


class KafkaTopicReader:
    """Reads every partition of a topic without a consumer group, from a
    given position or from the end."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, position: Position) -> None:
        self._consumer = consumer
        self._topic = topic
        self._position = position

    @classmethod
    async def open(
        cls, settings: KafkaSettings, topic: str, resume: Mapping[int, int] | None
    ) -> KafkaTopicReader:
        consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=None,
            enable_auto_commit=False,
            # An offset no longer in the log (retention) resumes at the oldest kept.
            auto_offset_reset="earliest",
            client_id="datapolis-notify-sse",
        )
        try:
            await consumer.start()
            position = await _assign(consumer, topic, resume)
        except KafkaError as exc:
            await consumer.stop()
            raise Unavailable("Kafka is unreachable") from exc
        except BaseException:
            await consumer.stop()
            raise
        return cls(consumer, topic, position)

    def position(self) -> Position:
        return dict(self._position)

    async def fetch(self, max_wait_s: float) -> list[TopicRecord]:
        batches = await self._consumer.getmany(timeout_ms=int(max_wait_s * 1000), max_records=500)
        return [
            TopicRecord(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value,
                headers=list(r.headers or ()),
                timestamp_ms=r.timestamp,
            )
            for records in batches.values()
            for r in records
        ]

    async def stop(self) -> None:
        await self._consumer.stop()


async def _assign(
    consumer: AIOKafkaConsumer, topic: str, resume: Mapping[int, int] | None
) -> Position:
    """Assigns every partition of ``topic`` at ``resume`` (or its end); the
    position it starts from."""
    # The consumer learns no topic's partitions before it is assigned some,
    # and aiokafka offers no public call for it: ask its client.
    cluster = await consumer._client.fetch_all_metadata()
    partitions = cluster.partitions_for_topic(topic)
    if not partitions:
        raise Unavailable(f"the dataset's topic {topic} is not in Kafka")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if resume is not None and set(resume) - set(partitions):
        raise InvalidEventId(
            f"Last-Event-ID names partitions the topic has not: {sorted(set(resume) - partitions)}"
        )
    consumer.assign(tps)
    if resume is None:
        await consumer.seek_to_end(*tps)
    else:
        first = await consumer.beginning_offsets(tps)
        last = await consumer.end_offsets(tps)
        for tp in tps:
            # A partition the id does not name was added since: all of it is
            # new. An offset the log no longer keeps resumes at the oldest
            # kept; one past its end (an id from another topic) at the end,
            # rather than at the oldest as Kafka's reset would.
            wanted = resume.get(tp.partition, first[tp])
            consumer.seek(tp, min(max(wanted, first[tp]), last[tp]))
    return {tp.partition: await consumer.position(tp) for tp in tps}


def _view(request: Request) -> EntitlementView:
    view: EntitlementView | None = getattr(request.app.state, "entitlements", None)
    if view is None:
        raise Unavailable("notify has not loaded the entitlements yet", retry_after_s=2)
    return view


def _slots(request: Request, settings: NotifySettings) -> StreamSlots:
    slots: StreamSlots | None = getattr(request.app.state, "stream_slots", None)
    if slots is None:
        slots = StreamSlots(settings.sse.max_streams_per_org)
        request.app.state.stream_slots = slots
    return slots


class StreamMetrics:
    """Open streams, what became of their records, and why they ended."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "datapolis_notify_sse_streams_open", "Server-sent event streams open", registry=registry
        )
        self.records = Counter(
            "datapolis_notify_sse_records_total",
            "Records a stream looked at: sent, held (view not current) or why skipped",
            ["outcome"],
            registry=registry,
        )
        self.ended = Counter(
            "datapolis_notify_sse_streams_ended_total",
            "Streams ended by the platform because the entitlement ended, by reason",
            ["reason"],
            registry=registry,
        )

    @classmethod
    def of(cls, request: Request, runtime: Runtime) -> StreamMetrics:
        metrics: StreamMetrics | None = getattr(request.app.state, "stream_metrics", None)
        if metrics is None:
            metrics = cls(runtime.metrics.registry)
            request.app.state.stream_metrics = metrics
        return metrics


def _listen(view: EntitlementView, wakeup: Wakeup) -> Callable[[], None]:
    """Registers ``wakeup`` with the view's change listeners; what undoes it."""
    on_change = getattr(view, "on_change", None)
    if on_change is None:
        return lambda: None
    undo: Any = on_change(wakeup)
    if callable(undo):
        return lambda: undo() and None
    remove = getattr(view, "remove_listener", None)
    if callable(remove):
        return lambda: remove(wakeup) and None
    return lambda: None


async def _server_sent(
    stream: RecordStream, finish: Callable[[], Any], metrics: StreamMetrics
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for event in stream.events():
            if isinstance(event, NoticeEvent):
                yield ServerSentEvent(
                    data=json.dumps(event.cloudevent, separators=(",", ":")), event="notification"
                )
                continue
            if isinstance(event, EndEvent):
                metrics.ended.labels(event.reason).inc()
                yield ServerSentEvent(data=json.dumps({"reason": event.reason}), event="end")
                return
            yield ServerSentEvent(
                data=json.dumps(event.cloudevent, separators=(",", ":")),
                event="record",
                id=event.event_id,
            )
    finally:
        await finish()


@router.get(
    "/subscriptions/{subscription_id}/events",
    summary="Stream a subscription's records as server-sent events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": STREAM_DESCRIPTION,
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        },
        **problem_responses(
            MISSING_SCOPE,
            NOT_ENTITLED,
            p.SUBSCRIPTION_NOT_FOUND,
            SUBSCRIPTION_NOT_STREAMABLE,
            INVALID_LAST_EVENT_ID,
            TOO_MANY_STREAMS,
        ),
    },
)
async def stream_events(
    request: Request,
    subscription_id: SubscriptionId,
    caller: Caller,
    runtime: RuntimeDep,
    last_event_id_header: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
) -> EventSourceResponse:
    # Receiving records is reading the subscription: `read` will do.
    require_read(caller)
    settings: NotifySettings = request.app.state.settings
    given = last_event_id_header or last_event_id
    resume = parse_event_id(given) if given else None
    subscription = await load_subscription(
        runtime.pool, subscription_id, org_id=caller.org_id, is_operator=caller.is_operator
    )
    view = _view(request)
    reason = stream_refusal(view, subscription, datetime.now(UTC))
    if reason is not None:
        raise NotEntitledToStream(
            f"the subscription's consumer may not receive the dataset now ({reason})",
            reason=reason,
        )
    dataset = view.dataset(subscription.dataset_id)
    if dataset is None:
        raise Unavailable("notify has not heard of the subscription's dataset yet")
    slots = _slots(request, settings)
    org = subscription.consumer_id
    slots.acquire(org)
    try:
        reader = await KafkaTopicReader.open(settings.kafka, dataset.topic_name, resume)
    except BaseException:
        slots.release(org)
        raise
    wakeup = Wakeup(lambda change: notice_for(change, subscription))
    unlisten = _listen(view, wakeup)

    metrics = StreamMetrics.of(request, runtime)
    metrics.open.inc()

    async def finish() -> None:
        metrics.open.dec()
        slots.release(org)
        unlisten()
        # A client that went away cancels the response: the reader must
        # still stop, or its fetcher would run on without anyone reading.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await reader.stop()

    stream = RecordStream(
        subscription=subscription,
        view=view,
        reader=reader,
        wakeup=wakeup,
        recheck_interval_s=settings.sse.recheck_interval_s,
        count=lambda outcome: metrics.records.labels(outcome).inc(),
    )
    return EventSourceResponse(
        _server_sent(stream, finish, metrics),
        ping=settings.sse.heartbeat_s,
        # Proxies (nginx) would otherwise buffer the stream.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        send_timeout=30,
    )
