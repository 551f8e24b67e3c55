"""Where a message goes: a webhook (through the ``WebhookSender`` port) or a
per-consumer Kafka topic. Both answer with the port's ``Outcome``."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from datapolis_notify.delivery.records import (
    BATCH_CONTENT_TYPE,
    EVENT_CONTENT_TYPE,
    Decided,
    batch_body,
    cloud_event,
)
from datapolis_notify.delivery.store import Subscription
from datapolis_notify.ports import Outcome, WebhookSender
from datapolis_shared.errors import DatapolisError, Unavailable
from datapolis_shared.kafka import OutgoingRecord, Producer, TopicSpec, ensure_topics
from datapolis_shared.settings import KafkaSettings


class ChannelSender(Protocol):
    async def send_records(
        self, subscription: Subscription, message_id: str, records: Sequence[Decided], now: datetime
    ) -> Outcome: ...

    async def send_event(
        self, subscription: Subscription, message_id: str, event: dict[str, Any], now: datetime
    ) -> Outcome: ...


class WebhookChannel:
    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender

    async def send_records(
        self, subscription: Subscription, message_id: str, records: Sequence[Decided], now: datetime
    ) -> Outcome:
        body = batch_body(
            [cloud_event(item.record, item.data, subscription.dataset_id) for item in records]
        )
        return await self._sender.send(
            subscription.endpoint(),
            message_id=message_id,
            body=body,
            content_type=BATCH_CONTENT_TYPE,
            now=now,
        )

    async def send_event(
        self, subscription: Subscription, message_id: str, event: dict[str, Any], now: datetime
    ) -> Outcome:
        return await self._sender.send(
            subscription.endpoint(),
            message_id=message_id,
            body=json.dumps(event, separators=(",", ":")).encode(),
            content_type=EVENT_CONTENT_TYPE,
            now=now,
        )


def deliver_topic(consumer_id: str, dataset_slug_or_id: str) -> str:
    return f"deliver.{consumer_id}.{dataset_slug_or_id}"


def default_topic(subscription: Subscription) -> str:
    """``deliver.<consumer>.<dataset>``, the dataset named as in its data topic
    (``data.<dataset>``)."""
    topic = subscription.topic_name
    if topic is not None and topic.startswith("data."):
        return deliver_topic(subscription.consumer_id, topic.removeprefix("data."))
    return deliver_topic(subscription.consumer_id, subscription.dataset_id or "notifications")


# The number of partitions of a data topic (None: unknown).
PartitionCount = Callable[[str], Awaitable[int | None]]


class KafkaChannel:
    """Records filtered and projected for one consumer, on
    ``deliver.<consumer>.<dataset>``: created on first use with the data
    topic's partitions, keyed by the record's key, written with acks=all.
    Each record keeps its ce_* headers (CloudEvents binary mode) and gets
    ``ce_id`` and ``webhook-id``-like ``datapolis_message_id`` headers so a
    reader deduplicates."""

    def __init__(
        self,
        producer: Producer,
        settings: KafkaSettings,
        partitions: PartitionCount,
        *,
        topic_name: Callable[[Subscription], str] | None = None,
    ) -> None:
        self._producer = producer
        self._settings = settings
        self._partitions = partitions
        self._topic_name = topic_name or default_topic
        self._ensured: set[str] = set()

    def topic_for(self, subscription: Subscription) -> str:
        return self._topic_name(subscription)

    async def _ensure(self, subscription: Subscription) -> str:
        topic = self.topic_for(subscription)
        if topic not in self._ensured:
            count = None
            if subscription.topic_name is not None:
                count = await self._partitions(subscription.topic_name)
            await ensure_topics(self._settings, [TopicSpec(topic, count or 3)])
            self._ensured.add(topic)
        return topic

    async def send_records(
        self, subscription: Subscription, message_id: str, records: Sequence[Decided], now: datetime
    ) -> Outcome:
        started = time.monotonic()
        try:
            topic = await self._ensure(subscription)
            outgoing = []
            for item in records:
                event = cloud_event(item.record, item.data, subscription.dataset_id)
                headers = [
                    (name, value.encode())
                    for name, value in item.record.headers.items()
                    if name.startswith("ce_") and name != "ce_id"
                ]
                headers.append(("ce_id", str(event["id"]).encode()))
                headers.append(("datapolis_message_id", message_id.encode()))
                outgoing.append(
                    OutgoingRecord(
                        topic=topic,
                        value=json.dumps(item.data, separators=(",", ":")).encode(),
                        key=None if item.record.key is None else item.record.key.encode(),
                        headers=headers,
                    )
                )
            await self._producer.send_many(outgoing)
        except (Unavailable, DatapolisError) as exc:
            return Outcome("retry", None, None, str(exc), time.monotonic() - started)
        return Outcome("delivered", None, None, None, time.monotonic() - started)

    async def send_event(
        self, subscription: Subscription, message_id: str, event: dict[str, Any], now: datetime
    ) -> Outcome:
        """A notification (a test, say) on the consumer's topic, as a
        structured CloudEvent keyed by the subscription."""
        started = time.monotonic()
        try:
            topic = await self._ensure(subscription)
            await self._producer.send_many(
                [
                    OutgoingRecord(
                        topic=topic,
                        value=json.dumps(event, separators=(",", ":")).encode(),
                        key=subscription.subscription_id.encode(),
                        headers=[
                            ("content-type", EVENT_CONTENT_TYPE.encode()),
                            ("datapolis_message_id", message_id.encode()),
                        ],
                    )
                ]
            )
        except (Unavailable, DatapolisError) as exc:
            return Outcome("retry", None, None, str(exc), time.monotonic() - started)
        return Outcome("delivered", None, None, None, time.monotonic() - started)


class Channels:
    """The channel of each subscription's kind."""

    def __init__(self, webhook: ChannelSender | None, kafka: ChannelSender | None) -> None:
        self._by_kind = {"webhook": webhook, "kafka": kafka}

    def of(self, subscription: Subscription) -> ChannelSender | None:
        return self._by_kind.get(subscription.channel)
