"""Server-sent event fixtures: a notify app served by uvicorn on 127.0.0.1
(an in-process ASGI transport buffers whole responses, so a stream never
arrives), its subscriptions, a dataset topic to write records to, and a
client that reads the events as a browser's EventSource would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from datapolis_notify.app import create_app
from datapolis_notify.ports import (
    DatasetView,
    Decision,
    Entitled,
    EntitlementView,
    NotEntitled,
    RefusalReason,
)
from datapolis_notify.settings import NotifySettings
from datapolis_shared.kafka import OutgoingRecord, Producer
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.settings import ServiceSettings
from tests.conftest import _free_port
from tests.integration.ingest.conftest import Publisher, issue_key
from tests.kafka_util import eventually

SETUP_WAIT_S = 60


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class EventReader:
    """The events of one open stream, parsed per the SSE specification."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments = 0

    async def next(self, timeout_s: float = 10.0) -> SseEvent | None:
        """The next event; None when the server closed the stream."""
        return await asyncio.wait_for(self._next(), timeout_s)

    async def _next(self) -> SseEvent | None:
        fields: dict[str, list[str]] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields or "event" in fields:
                    return SseEvent(
                        event=(fields.get("event") or ["message"])[-1],
                        data="\n".join(fields.get("data", [])),
                        id=(fields.get("id") or [None])[-1],
                    )
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        return None

    async def records(self, count: int, timeout_s: float = 10.0) -> list[SseEvent]:
        found: list[SseEvent] = []
        while len(found) < count:
            event = await self.next(timeout_s)
            assert event is not None, f"stream closed after {len(found)} of {count} records"
            assert event.event == "record", event
            found.append(event)
        return found


@dataclass
class StandInView:
    """An entitlement view driven by the test: datasets, agreements'
    fields, consenting subjects, and the listeners told of each change."""

    datasets: dict[str, DatasetView] = field(default_factory=dict)
    # (consumer, dataset) -> fields of a granted agreement
    agreements: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    consents: set[tuple[str, str, str]] = field(default_factory=set)  # consumer, dataset, subject
    current: bool = True
    listeners: list[Callable[..., Any]] = field(default_factory=list)

    def dataset(self, dataset_id: str) -> DatasetView | None:
        return self.datasets.get(dataset_id)

    def dataset_for_topic(self, topic: str) -> DatasetView | None:
        return next((d for d in self.datasets.values() if d.topic_name == topic), None)

    def decide(
        self,
        *,
        dataset_id: str,
        consumer_id: str,
        purpose: str | None,
        subject_id: str | None,
        now: datetime,
    ) -> Decision:
        dataset = self.datasets.get(dataset_id)
        if dataset is not None and dataset.access_level == "open":
            return Entitled(None, None, None)
        reason = self._refusal(dataset, consumer_id, subject_id)
        if reason is not None:
            return NotEntitled(reason)
        return Entitled("agr", None, self.agreements[(consumer_id, dataset_id)])

    def _refusal(
        self, dataset: DatasetView | None, consumer_id: str, subject_id: str | None
    ) -> RefusalReason | None:
        if dataset is None:
            return "unknown-dataset"
        if not self.current:
            return "state-not-current"
        if dataset.retired or (consumer_id, dataset.dataset_id) not in self.agreements:
            return "dataset-retired" if dataset.retired else "no-active-agreement"
        if dataset.access_level != "personal":
            return None
        if subject_id is None:
            return "no-subject"
        consented = (consumer_id, dataset.dataset_id, subject_id) in self.consents
        return None if consented else "no-active-consent"

    def is_current(self) -> bool:
        return self.current

    def on_change(self, callback: Callable[..., Any]) -> Callable[[], None]:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    def changed(self) -> None:
        for listener in list(self.listeners):
            listener()


@dataclass
class Notify:
    app: FastAPI
    url: str
    # The test's stand-in, or None where the app feeds its own view.
    stand_in: StandInView | None
    producer: Producer
    client: httpx.AsyncClient

    @property
    def settings(self) -> NotifySettings:
        settings: NotifySettings = self.app.state.settings
        return settings

    @property
    def view(self) -> StandInView:
        assert self.stand_in is not None, "this app feeds its own view"
        return self.stand_in

    def decide(
        self, dataset_id: str, consumer_id: str, purpose: str | None, subject_id: str | None
    ) -> Decision:
        """The app's own view's decision now."""
        view: EntitlementView = self.app.state.entitlements
        return view.decide(
            dataset_id=dataset_id,
            consumer_id=consumer_id,
            purpose=purpose,
            subject_id=subject_id,
            now=datetime.now(UTC),
        )

    async def until_view(self) -> EntitlementView:
        await eventually(
            lambda: getattr(self.app.state, "entitlements", None) is not None,
            timeout_s=SETUP_WAIT_S,
        )
        view: EntitlementView = self.app.state.entitlements
        return view

    async def subscription(
        self,
        consumer_id: str,
        dataset_id: str | None,
        *,
        channel: str = "sse",
        purpose: str | None = None,
        fields: list[str] | None = None,
        filter: dict[str, Any] | None = None,
        notifications: list[str] | None = None,
    ) -> str:
        subscription_id = f"sub-{uuid.uuid4().hex[:12]}"
        await self.app.state.runtime.pool.execute(
            "INSERT INTO subscriptions (subscription_id, consumer_id, dataset_id, channel, url,"
            " purpose, fields, filter, notifications)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)",
            subscription_id,
            consumer_id,
            dataset_id,
            channel,
            "https://example.org/hook" if channel == "webhook" else None,
            purpose,
            fields,
            json.dumps(filter or {}),
            notifications or [],
        )
        return subscription_id

    async def send(self, topic: str, *records: dict[str, Any]) -> None:
        for record in records:
            await self.producer.send(
                OutgoingRecord(
                    topic,
                    json.dumps(record).encode(),
                    str(record["meter_id"]).encode(),
                    [
                        ("ce_source", b"/datasets/meters"),
                        ("ce_type", b"org.datapolis.dataset.meters.record.v1"),
                    ],
                )
            )

    @contextlib.asynccontextmanager
    async def stream(
        self, subscription_id: str, who: Publisher, **params: Any
    ) -> AsyncIterator[EventReader]:
        headers = {**who.headers, **params.pop("headers", {})}
        async with self.client.stream(
            "GET",
            f"{self.url}/subscriptions/{subscription_id}/events",
            headers=headers,
            params=params,
        ) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield EventReader(response)

    async def key(self, org_id: str, scopes: tuple[str, ...] = ("read",)) -> Publisher:
        party = await issue_key(self.producer, org_id, list(scopes))
        await self.until_known(party)
        return party

    async def until_known(self, party: Publisher) -> None:
        """Until this app has learnt ``party``'s key from catalog's events."""

        async def works() -> bool:
            try:
                await self.app.state.runtime.keys.resolve(party.token)
            except Exception:
                return False
            return True

        await eventually(works, timeout_s=SETUP_WAIT_S)


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), timeout_s=SETUP_WAIT_S)
        assert not task.done(), "the server did not start"
        await asyncio.wait_for(app.state.runtime.connected.wait(), SETUP_WAIT_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


NotifyFactory = Callable[..., Awaitable[Notify]]


@pytest.fixture
async def start_notify(
    service_settings: ServiceSettings, producer: Producer, database_url: str
) -> AsyncIterator[NotifyFactory]:
    """Starts notify apps with ``overrides`` of their settings, each on a
    PostgreSQL schema of its own (notify's table names are consent's too)."""
    schemas: list[str] = []
    async with contextlib.AsyncExitStack() as stack:

        async def start(*, stand_in: bool = True, **overrides: Any) -> Notify:
            """``stand_in=False``: the app feeds its own view from Kafka, as
            in production (``overrides`` then name its topics); otherwise
            the test drives a stand-in view."""
            schema = f"n_{uuid.uuid4().hex[:12]}"
            schemas.append(schema)
            settings = NotifySettings(
                **{
                    **dict(service_settings),
                    # A consumer group of its own for the key sync: in a group shared
                    # with other apps it might not be given the key's partition.
                    "service_name": f"notify{uuid.uuid4().hex[:6]}",
                    "postgres": service_settings.postgres.model_copy(update={"db_schema": schema}),
                    **overrides,
                }
            )
            await apply(database_url, schema, service_migrations("datapolis_notify"))
            app = create_app(settings)
            view = StandInView() if stand_in else None
            url = await stack.enter_async_context(serving(app))
            if view is not None:
                # Over the app's own (set before the app counts as connected).
                app.state.entitlements = view
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
            return Notify(app, url, view, producer, client)

        yield start
    conn = await asyncpg.connect(database_url)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def notify(start_notify: NotifyFactory) -> Notify:
    return await start_notify(sse={"max_streams_per_org": 2})


def meter_dataset(topic: str, access_level: Any = "shared") -> DatasetView:
    return DatasetView(
        dataset_id=f"ds-{uuid.uuid4().hex[:12]}",
        slug=topic.replace(".", "-"),
        publisher_id="org-publisher",
        access_level=access_level,
        topic_name=topic,
        key_field="meter_id",
        subject_field="household" if access_level == "personal" else None,
        theme=None,
        retired=False,
    )
