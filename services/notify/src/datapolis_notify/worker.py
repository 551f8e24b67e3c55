"""The notify worker: delivers dataset records to subscriptions.

``python -m datapolis_notify worker`` reads the dataset topics (consumer
group ``NOTIFY_DELIVERY__GROUP_ID``), asks the entitlement view at every
attempt, and delivers by webhook and per-consumer Kafka topic (see
``datapolis_notify.delivery``). Several replicas share the partitions and
the durable queue.

It serves /healthz, /readyz and /metrics on ``NOTIFY_WORKER_HTTP__HOST`` /
``__PORT``: ready once PostgreSQL and Kafka answer, its consumer has its
partitions, and the entitlement view is current.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from datapolis_notify.delivery.channels import Channels, KafkaChannel, WebhookChannel
from datapolis_notify.delivery.consumer import DatasetReader
from datapolis_notify.delivery.engine import DeliveryEngine, RetryDelay
from datapolis_notify.delivery.metrics import DeliveryMetrics
from datapolis_notify.entitlements.feed import start_entitlements
from datapolis_notify.entitlements.projection import start_entitlement_projection
from datapolis_notify.notifications import start_notifications
from datapolis_notify.ports import EntitlementView, WebhookSender
from datapolis_notify.settings import NotifySettings
from datapolis_notify.webhooks.sender import HttpWebhookSender
from datapolis_shared.http.worker import WorkerHttpServer
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """What the engine is built on: the entitlement view (with whatever
    keeps it current) and the webhook sender."""

    view: EntitlementView
    sender: WebhookSender
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    retry_delay: RetryDelay | None = None


PartsFactory = Callable[[Runtime, NotifySettings], Awaitable[Parts]]


async def default_parts(runtime: Runtime, settings: NotifySettings) -> Parts:
    """The worker keeps notify's entitlement tables (the projection every
    process's view starts from), follows them in memory (``/readyz`` says
    ``entitlements`` until the view is current), and sends with the signing
    webhook sender."""
    start_entitlement_projection(runtime, settings.entitlements)
    # Partner notifications: queued here, sent by the engine's queue.
    start_notifications(runtime, settings.entitlements)
    feed = await start_entitlements(runtime, settings.entitlements)
    sender = HttpWebhookSender(settings.webhooks)

    async def nothing() -> None:
        return None

    async def stop() -> None:
        await feed.stop()
        await sender.aclose()

    return Parts(view=feed.view, sender=sender, start=nothing, stop=stop)


@dataclass
class Delivery:
    engine: DeliveryEngine
    reader: DatasetReader


async def serve(
    settings: NotifySettings,
    stop: asyncio.Event,
    *,
    parts_factory: PartsFactory = default_parts,
) -> None:
    runtime = Runtime(settings=settings, metrics=ServiceMetrics(settings.service_name))
    metrics = DeliveryMetrics(runtime.metrics.registry)
    running: list[Delivery] = []
    built: list[Parts] = []

    async def on_connected(runtime: Runtime) -> None:
        parts = await parts_factory(runtime, settings)
        built.append(parts)
        await parts.start()

        async def partitions(topic: str) -> int | None:
            return await reader.partitions(topic)

        engine = DeliveryEngine(
            pool=runtime.pool,
            view=parts.view,
            channels=Channels(
                WebhookChannel(parts.sender),
                KafkaChannel(runtime.require_producer(), settings.kafka, partitions),
            ),
            settings=settings.delivery,
            metrics=metrics,
            retry_delay=parts.retry_delay,
            connections_per_host=settings.webhooks.max_connections_per_host,
        )
        reader = DatasetReader(settings.kafka, settings.delivery, engine)
        await engine.start()
        reader.start()
        running.append(Delivery(engine, reader))
        log.info("delivering records of %s", settings.delivery.topic_pattern)

    async def delivery_problem() -> str | None:
        if not running:
            return "starting"
        delivery = running[0]
        return delivery.engine.problem() or delivery.reader.problem()

    async def view_problem() -> str | None:
        if not built:
            return "starting"
        return None if built[0].view.is_current() else "the entitlement view is not current"

    runtime.checks["delivery"] = delivery_problem
    # Replaced by the entitlement feed's own check once it runs.
    runtime.checks["entitlements"] = view_problem
    http = WorkerHttpServer(runtime)
    await http.start()
    # The worker writes no outbox rows and authenticates no API keys.
    await runtime.start(on_connected, sync_keys=False, relay=False)
    try:
        await stop.wait()
    finally:
        await http.stop()
        for delivery in running:
            await delivery.reader.stop()
            await delivery.engine.stop()
        for parts in built:
            await parts.stop()
        await runtime.stop()


def run_worker(settings: ServiceSettings) -> None:
    """``python -m datapolis_notify worker``: runs until SIGTERM/SIGINT."""
    config = settings if isinstance(settings, NotifySettings) else NotifySettings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(main())
