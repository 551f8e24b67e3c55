"""The stream's decisions, without Kafka or HTTP: a fake view and reader."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from datapolis_notify.ports import DatasetView, Decision, Entitled, NotEntitled, RefusalReason
from datapolis_notify.stream import (
    EndEvent,
    Hold,
    InvalidEventId,
    NoticeEvent,
    RecordEvent,
    RecordStream,
    Send,
    Skip,
    StreamSlots,
    StreamSubscription,
    TooManyStreams,
    TopicRecord,
    Wakeup,
    encode_position,
    judge,
    notice_for,
    parse_event_id,
)

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
DATASET = DatasetView(
    dataset_id="ds-1",
    slug="meters",
    publisher_id="pub",
    access_level="personal",
    topic_name="data.meters",
    key_field="meter_id",
    subject_field="household",
    theme=None,
    retired=False,
)


@dataclass
class FakeView:
    """Entitled to fields ``fields`` unless ``ended``; subjects in
    ``consenting`` have consent; ``current`` as set."""

    fields: frozenset[str] = frozenset({"meter_id", "kwh", "household"})
    consenting: set[str] = field(default_factory=lambda: {"h-1", "h-2"})
    ended: RefusalReason | None = None
    current: bool = True
    listeners: list[Callable[..., Any]] = field(default_factory=list)

    def dataset(self, dataset_id: str) -> DatasetView | None:
        return DATASET if dataset_id == DATASET.dataset_id else None

    def dataset_for_topic(self, topic: str) -> DatasetView | None:
        return DATASET if topic == DATASET.topic_name else None

    def decide(
        self,
        *,
        dataset_id: str,
        consumer_id: str,
        purpose: str | None,
        subject_id: str | None,
        now: datetime,
    ) -> Decision:
        if not self.current:
            return NotEntitled("state-not-current")
        if self.ended is not None:
            return NotEntitled(self.ended)
        if subject_id is None:
            return NotEntitled("no-subject")
        if subject_id not in self.consenting:
            return NotEntitled("no-active-consent")
        return Entitled("agr-1", f"consent-{subject_id}", self.fields)

    def is_current(self) -> bool:
        return self.current

    def on_change(self, callback: Callable[..., Any]) -> Callable[[], None]:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    def changed(self) -> None:
        for listener in list(self.listeners):
            listener()


@dataclass
class FakeReader:
    start: dict[int, int]
    queue: asyncio.Queue[TopicRecord] = field(default_factory=asyncio.Queue)

    def position(self) -> dict[int, int]:
        return dict(self.start)

    async def fetch(self, max_wait_s: float) -> list[TopicRecord]:
        try:
            return [await asyncio.wait_for(self.queue.get(), max_wait_s)]
        except TimeoutError:
            return []


def subscription(**overrides: Any) -> StreamSubscription:
    values: dict[str, Any] = {
        "subscription_id": "sub-1",
        "consumer_id": "org-c",
        "dataset_id": "ds-1",
        "purpose": "dpv:ServiceProvision",
        "fields": None,
        "filter": {},
    }
    return StreamSubscription(**{**values, **overrides})


def record(offset: int, value: dict[str, Any], partition: int = 0) -> TopicRecord:
    return TopicRecord(
        topic="data.meters",
        partition=partition,
        offset=offset,
        key=str(value.get("meter_id")).encode(),
        value=json.dumps(value).encode(),
        headers=[("ce_source", b"/datasets/meters"), ("ce_type", b"org.datapolis.meters.v1")],
        timestamp_ms=1_764_650_000_000,
    )


RECORD = {"meter_id": "m-1", "kwh": 1.5, "household": "h-1", "address": "1 Main St"}


def test_an_event_id_names_the_position_of_every_partition() -> None:
    position = {1: 7, 0: 18}
    assert encode_position(position) == "0:18,1:7"
    assert parse_event_id("0:18,1:7") == position


@pytest.mark.parametrize("text", ["", "0", "0:", "a:1", "0:1,", "0:1;1:2", "0:1,0:2", " 0:1"])
def test_a_malformed_event_id_is_refused(text: str) -> None:
    with pytest.raises(InvalidEventId):
        parse_event_id(text)


def test_the_record_sent_is_projected_on_agreed_and_asked_fields() -> None:
    verdict = judge(
        record(3, RECORD),
        subscription=subscription(fields=frozenset({"kwh", "address", "meter_id"})),
        dataset=DATASET,
        view=FakeView(),
        now=NOW,
    )
    assert isinstance(verdict, Send)
    event = verdict.cloudevent
    # address was asked for but not agreed; household agreed but not asked.
    assert event["data"] == {"meter_id": "m-1", "kwh": 1.5}
    assert event["id"] == "data.meters:0:3"
    assert event["subject"] == "m-1"
    assert event["source"] == "/datasets/meters"
    assert event["type"] == "org.datapolis.meters.v1"


def test_a_record_of_a_subject_without_consent_is_skipped() -> None:
    verdict = judge(
        record(0, {**RECORD, "household": "h-9"}),
        subscription=subscription(),
        dataset=DATASET,
        view=FakeView(),
        now=NOW,
    )
    assert verdict == Skip("no-active-consent")


def test_a_record_the_filter_does_not_match_is_skipped() -> None:
    verdict = judge(
        record(0, RECORD),
        subscription=subscription(filter={"meter_id": "m-2"}),
        dataset=DATASET,
        view=FakeView(),
        now=NOW,
    )
    assert verdict == Skip("filtered")


def test_a_record_is_held_while_the_view_is_not_current() -> None:
    verdict = judge(
        record(0, RECORD),
        subscription=subscription(),
        dataset=DATASET,
        view=FakeView(current=False),
        now=NOW,
    )
    assert verdict == Hold()


def test_beyond_the_limit_an_organisation_opens_no_stream() -> None:
    slots = StreamSlots(2)
    slots.acquire("org-c")
    slots.acquire("org-c")
    with pytest.raises(TooManyStreams):
        slots.acquire("org-c")
    slots.acquire("org-other")
    slots.release("org-c")
    slots.acquire("org-c")


async def _next(events: Any, timeout_s: float = 2.0) -> Any:
    return await asyncio.wait_for(anext(events), timeout_s)


async def test_each_sent_event_carries_the_position_after_it() -> None:
    view, reader = FakeView(), FakeReader({0: 10, 1: 4})
    stream = RecordStream(subscription(), view, reader, Wakeup(), recheck_interval_s=0.05)
    events = stream.events()
    reader.queue.put_nowait(record(10, RECORD))
    reader.queue.put_nowait(record(4, {**RECORD, "household": "h-9"}, partition=1))
    reader.queue.put_nowait(record(11, {**RECORD, "household": "h-2"}))
    first, second = await _next(events), await _next(events)
    assert isinstance(first, RecordEvent)
    assert isinstance(second, RecordEvent)
    assert first.event_id == "0:11,1:4"
    # The skipped record of partition 1 is passed: a resume does not see it again.
    assert second.event_id == "0:12,1:5"
    await events.aclose()


async def test_an_idle_stream_ends_as_soon_as_the_view_says_the_agreement_ended() -> None:
    view, reader = FakeView(), FakeReader({0: 0})
    # A long re-check interval: only the change listener can end it quickly.
    stream = RecordStream(subscription(), view, reader, Wakeup(), recheck_interval_s=30)
    view.on_change(stream.wakeup)
    events = stream.events()
    pending = asyncio.ensure_future(_next(events, timeout_s=5))
    await asyncio.sleep(0.05)
    view.ended = "no-active-agreement"
    started = time.monotonic()
    view.changed()
    ended = await pending
    assert ended == EndEvent("no-active-agreement")
    assert time.monotonic() - started < 0.5
    await events.aclose()


async def test_a_held_record_is_sent_once_the_view_is_current_again() -> None:
    view, reader = FakeView(current=False), FakeReader({0: 0})
    stream = RecordStream(subscription(), view, reader, Wakeup(), recheck_interval_s=30)
    view.on_change(stream.wakeup)
    events = stream.events()
    reader.queue.put_nowait(record(0, RECORD))
    pending = asyncio.ensure_future(_next(events, timeout_s=5))
    await asyncio.sleep(0.2)
    assert not pending.done()
    view.current = True
    view.changed()
    sent = await pending
    assert isinstance(sent, RecordEvent)
    assert sent.cloudevent["id"] == "data.meters:0:0"
    await events.aclose()


def _retired_change(dataset_id: str = "ds-1") -> Any:
    """A view's change as the entitlement feed reports it: the dataset retired."""
    from types import SimpleNamespace

    from datapolis_shared.events.catalog import DatasetRetired

    retired = dataclasses.replace(DATASET, dataset_id=dataset_id, retired=True)
    return SimpleNamespace(
        kind="dataset",
        event=DatasetRetired(dataset_id=dataset_id, slug="meters"),
        before=None,
        after=SimpleNamespace(view=retired),
    )


def test_a_notification_is_sent_only_for_what_the_subscription_asked() -> None:
    asked = subscription(notifications=frozenset({"datasets"}))
    notice = notice_for(_retired_change(), asked)
    assert notice is not None
    assert notice["type"] == "org.datapolis.catalog.dataset.retired.v1"
    assert notice["data"]["dataset_id"] == "ds-1"
    assert notice_for(_retired_change(), subscription()) is None
    assert notice_for(_retired_change("ds-other"), asked) is None


async def test_the_notification_of_a_retirement_comes_before_the_end() -> None:
    view, reader = FakeView(), FakeReader({0: 0})
    asked = subscription(notifications=frozenset({"datasets"}))
    wakeup = Wakeup(lambda change: notice_for(change, asked))
    stream = RecordStream(asked, view, reader, wakeup, recheck_interval_s=30)
    events = stream.events()
    pending = asyncio.ensure_future(_next(events, timeout_s=5))
    await asyncio.sleep(0.05)
    view.ended = "dataset-retired"
    wakeup(_retired_change())
    notice = await pending
    assert isinstance(notice, NoticeEvent)
    assert notice.cloudevent["type"] == "org.datapolis.catalog.dataset.retired.v1"
    assert await _next(events) == EndEvent("dataset-retired")
    await events.aclose()
