"""Server-sent events against the real broker and database, read by a real
HTTP client from a notify app served on 127.0.0.1."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.notify.stream.conftest import Notify, NotifyFactory, meter_dataset

PROBLEM = "application/problem+json"
TopicFactory = Callable[..., Awaitable[str]]


def _meter(n: int, household: str = "h-1") -> dict[str, object]:
    return {"meter_id": f"m-{n}", "kwh": n / 10, "household": household, "address": "1 Main St"}


async def test_records_arrive_filtered_and_projected(
    notify: Notify, new_topic: TopicFactory
) -> None:
    dataset = meter_dataset(await new_topic("data", partitions=2))
    consumer = await notify.key(f"org-con-{uuid.uuid4().hex[:8]}")
    notify.view.datasets[dataset.dataset_id] = dataset
    # The agreement allows three fields; the subscription asks for two of
    # them and one it may not have.
    notify.view.agreements[(consumer.org_id, dataset.dataset_id)] = frozenset(
        {"meter_id", "kwh", "household"}
    )
    subscription = await notify.subscription(
        consumer.org_id,
        dataset.dataset_id,
        fields=["meter_id", "kwh", "address"],
        filter={"household": "h-1"},
    )
    async with notify.stream(subscription, consumer) as events:
        await notify.send(dataset.topic_name, _meter(1), _meter(2, "h-2"), _meter(3))
        received = await events.records(2)
    # Two partitions: order is kept per key, not across keys.
    assert sorted((e.json()["data"] for e in received), key=lambda d: d["meter_id"]) == [
        {"meter_id": "m-1", "kwh": 0.1},
        {"meter_id": "m-3", "kwh": 0.3},
    ]
    for event in received:
        cloudevent = event.json()
        assert set(cloudevent["data"]) == {"meter_id", "kwh"}
        assert cloudevent["specversion"] == "1.0"
        assert cloudevent["subject"] == cloudevent["data"]["meter_id"]
        assert cloudevent["source"] == "/datasets/meters"
        assert cloudevent["type"] == "org.datapolis.dataset.meters.record.v1"
        assert cloudevent["id"].startswith(f"{dataset.topic_name}:")


async def test_a_stream_resumed_from_last_event_id_misses_and_repeats_nothing(
    notify: Notify, new_topic: TopicFactory
) -> None:
    dataset = meter_dataset(await new_topic("data", partitions=3))
    consumer = await notify.key(f"org-con-{uuid.uuid4().hex[:8]}")
    notify.view.datasets[dataset.dataset_id] = dataset
    notify.view.agreements[(consumer.org_id, dataset.dataset_id)] = frozenset({"meter_id", "kwh"})
    subscription = await notify.subscription(consumer.org_id, dataset.dataset_id)
    async with notify.stream(subscription, consumer) as events:
        await notify.send(dataset.topic_name, *(_meter(n) for n in range(12)))
        first = await events.records(5)
    last_id = first[-1].id
    assert last_id is not None
    # Records written while the client was away are not lost either.
    await notify.send(dataset.topic_name, *(_meter(n) for n in range(12, 16)))
    async with notify.stream(subscription, consumer, headers={"Last-Event-ID": last_id}) as events:
        rest = await events.records(11)
        # Nothing more than the 16 records written comes.
        with pytest.raises(TimeoutError):
            await events.next(timeout_s=1.0)
    ids = [e.json()["id"] for e in first + rest]
    assert len(set(ids)) == 16
    assert sorted(e.json()["data"]["meter_id"] for e in first + rest) == sorted(
        f"m-{n}" for n in range(16)
    )
    # The query parameter does the same, for clients that cannot set headers.
    async with notify.stream(subscription, consumer, last_event_id=last_id) as events:
        again = await events.records(11)
    assert sorted(e.json()["id"] for e in again) == sorted(e.json()["id"] for e in rest)


async def test_a_withdrawn_subjects_records_stop_while_others_continue(
    notify: Notify, new_topic: TopicFactory
) -> None:
    dataset = meter_dataset(await new_topic("data", partitions=1), access_level="personal")
    consumer = await notify.key(f"org-con-{uuid.uuid4().hex[:8]}")
    view = notify.view
    view.datasets[dataset.dataset_id] = dataset
    view.agreements[(consumer.org_id, dataset.dataset_id)] = frozenset({"meter_id", "kwh"})
    view.consents |= {(consumer.org_id, dataset.dataset_id, h) for h in ("h-1", "h-2")}
    subscription = await notify.subscription(
        consumer.org_id, dataset.dataset_id, purpose="dpv:ServiceProvision"
    )
    async with notify.stream(subscription, consumer) as events:
        await notify.send(dataset.topic_name, _meter(1, "h-1"), _meter(2, "h-2"))
        before = await events.records(2)
        view.consents.discard((consumer.org_id, dataset.dataset_id, "h-1"))
        view.changed()
        await notify.send(
            dataset.topic_name,
            _meter(3, "h-1"),
            _meter(4, "h-2"),
            _meter(5, "h-3"),
            {"meter_id": "m-6", "kwh": 0.6},
        )
        after = await events.records(1)
        with pytest.raises(TimeoutError):
            await events.next(timeout_s=1.0)
    assert [e.json()["data"]["meter_id"] for e in before] == ["m-1", "m-2"]
    assert [e.json()["data"]["meter_id"] for e in after] == ["m-4"]
    # Operators see the skips, by reason, not by subject.
    metrics = (await notify.client.get(f"{notify.url}/metrics")).text
    assert 'datapolis_notify_sse_records_total{outcome="no-active-consent"} 2.0' in metrics
    assert 'datapolis_notify_sse_records_total{outcome="no-subject"} 1.0' in metrics


async def test_a_stream_closes_within_a_second_of_its_agreement_ending(
    notify: Notify, new_topic: TopicFactory
) -> None:
    dataset = meter_dataset(await new_topic("data", partitions=1))
    consumer = await notify.key(f"org-con-{uuid.uuid4().hex[:8]}")
    notify.view.datasets[dataset.dataset_id] = dataset
    notify.view.agreements[(consumer.org_id, dataset.dataset_id)] = frozenset({"meter_id"})
    subscription = await notify.subscription(consumer.org_id, dataset.dataset_id)
    async with notify.stream(subscription, consumer) as events:
        await notify.send(dataset.topic_name, _meter(1))
        await events.records(1)
        del notify.view.agreements[(consumer.org_id, dataset.dataset_id)]
        notify.view.changed()
        revoked_at = time.monotonic()
        end = await events.next(timeout_s=5)
        assert end is not None
        assert end.event == "end"
        assert end.json() == {"reason": "no-active-agreement"}
        assert await events.next(timeout_s=5) is None
        closed_s = time.monotonic() - revoked_at
    assert closed_s < 1.0
    # A new stream is refused with the reason.
    response = await notify.client.get(
        f"{notify.url}/subscriptions/{subscription}/events", headers=consumer.headers
    )
    assert response.status_code == 403
    assert response.json()["code"] == "not-entitled"
    assert response.json()["reason"] == "no-active-agreement"


async def test_streams_are_refused_for_others_subscriptions_bad_ids_and_beyond_the_limit(
    notify: Notify, new_topic: TopicFactory
) -> None:
    dataset = meter_dataset(await new_topic("data", partitions=1))
    consumer = await notify.key(f"org-con-{uuid.uuid4().hex[:8]}")
    stranger = await notify.key(f"org-other-{uuid.uuid4().hex[:8]}")
    ingest_only = await notify.key(consumer.org_id, scopes=("ingest",))
    notify.view.datasets[dataset.dataset_id] = dataset
    notify.view.agreements[(consumer.org_id, dataset.dataset_id)] = frozenset({"meter_id"})
    subscription = await notify.subscription(consumer.org_id, dataset.dataset_id)
    webhook = await notify.subscription(consumer.org_id, dataset.dataset_id, channel="webhook")
    url = f"{notify.url}/subscriptions/{{}}/events"

    async def problem(subscription_id: str, status: int, code: str, **kwargs: object) -> None:
        response = await notify.client.get(url.format(subscription_id), **kwargs)  # type: ignore[arg-type]  # httpx's keyword types
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == code

    await problem(subscription, 404, "subscription-not-found", headers=stranger.headers)
    await problem(subscription, 403, "missing-scope", headers=ingest_only.headers)
    await problem("sub-nonesuch", 404, "subscription-not-found", headers=consumer.headers)
    await problem(webhook, 409, "subscription-not-streamable", headers=consumer.headers)
    for bad in ("yesterday", "0:1,0:2", "-1:5"):
        await problem(
            subscription,
            422,
            "invalid-last-event-id",
            headers={**consumer.headers, "Last-Event-ID": bad},
        )
    await problem(
        subscription,
        422,
        "invalid-last-event-id",
        headers=consumer.headers,
        params={"last_event_id": "0:1,7:3"},
    )

    limit = notify.settings.sse.max_streams_per_org
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(limit):
            await stack.enter_async_context(notify.stream(subscription, consumer))
        response = await notify.client.get(url.format(subscription), headers=consumer.headers)
        assert response.status_code == 429
        assert response.json()["code"] == "too-many-streams"
        assert "retry-after" in response.headers
    # Closed streams free their places.
    async with notify.stream(subscription, consumer):
        pass


async def test_an_idle_stream_sends_heartbeats(
    start_notify: NotifyFactory, new_topic: TopicFactory
) -> None:
    notify = await start_notify(sse={"heartbeat_s": 0.2})
    dataset = meter_dataset(await new_topic("data", partitions=1))
    consumer = await notify.key(f"org-con-{uuid.uuid4().hex[:8]}")
    notify.view.datasets[dataset.dataset_id] = dataset
    notify.view.agreements[(consumer.org_id, dataset.dataset_id)] = frozenset({"meter_id"})
    subscription = await notify.subscription(consumer.org_id, dataset.dataset_id)
    async with notify.stream(subscription, consumer) as events:
        with pytest.raises(TimeoutError):
            await events.next(timeout_s=1.0)
        assert events.comments >= 2


async def test_an_id_past_the_end_resumes_at_the_end_not_from_the_start(
    notify: Notify, new_topic: TopicFactory
) -> None:
    dataset = meter_dataset(await new_topic("data", partitions=1))
    consumer = await notify.key(f"org-con-{uuid.uuid4().hex[:8]}")
    notify.view.datasets[dataset.dataset_id] = dataset
    notify.view.agreements[(consumer.org_id, dataset.dataset_id)] = frozenset({"meter_id"})
    subscription = await notify.subscription(consumer.org_id, dataset.dataset_id)
    await notify.send(dataset.topic_name, _meter(1), _meter(2))
    async with notify.stream(subscription, consumer, last_event_id="0:999999") as events:
        await notify.send(dataset.topic_name, _meter(3))
        (event,) = await events.records(1)
    assert event.json()["data"] == {"meter_id": "m-3"}
    assert event.id == "0:3"


async def test_metrics_list_the_stream_families_before_any_stream_opens(notify: Notify) -> None:
    # The dashboard's server-sent event panels read these: they must be
    # exported (at 0) by a notify API nobody has streamed from yet.
    metrics = (await notify.client.get(f"{notify.url}/metrics")).text
    assert "\ndatapolis_notify_sse_streams_open 0.0\n" in metrics
    assert "# TYPE datapolis_notify_sse_records_total counter" in metrics
    assert "# TYPE datapolis_notify_sse_streams_ended_total counter" in metrics
