"""The ingest HTTP API: wiring of registry, ingestor, stats and housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI
from prometheus_client import Counter

import datapolis_ingest
from datapolis_ingest.api import router
from datapolis_ingest.idempotency import IdempotencyStore
from datapolis_ingest.ingestion import DedupWindows, Ingestor
from datapolis_ingest.limits import RecordSizeLimits
from datapolis_ingest.registry import DatasetRegistry
from datapolis_ingest.settings import IngestSettings
from datapolis_ingest.stats import StatsAggregator, records_counter
from datapolis_shared.events.base import CATALOG_EVENTS
from datapolis_shared.http.app import create_service_app
from datapolis_shared.kafka import (
    ConsumerLoop,
    OutgoingRecord,
    Producer,
    topic_max_message_bytes,
)
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

PURGE_EVERY_S = 600.0


class GroupCommitSink:
    """Records of concurrent requests share Kafka batches (see Producer.send_batched)."""

    __slots__ = ("_producer",)

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    async def send_many(self, records: Sequence[OutgoingRecord]) -> Sequence[object]:
        await self._producer.send_batched(records)
        return records


def ingest_settings(settings: ServiceSettings | None) -> IngestSettings:
    if settings is None:
        return IngestSettings()
    if isinstance(settings, IngestSettings):
        return settings
    return IngestSettings(**dict(settings))


async def start_registry(
    runtime: Runtime, settings: IngestSettings, *, group_suffix: str
) -> DatasetRegistry:
    """Load the datasets ingest knows, then follow catalog's events.

    The registry consumer has a group of its own: sharing the runtime's group
    (the key sync) on the same topic would split the partitions between them.
    Replicas do share it, each applying its partitions' events to the tables;
    every process learns all changes from the tables' announcements. The
    caller stops the registry (``DatasetRegistry.stop``) before the runtime.
    """
    registry = DatasetRegistry(
        runtime.pool,
        catalog_url=settings.catalog_url,
        propagation_bound_s=settings.propagation_bound_s,
    )
    await registry.start()
    runtime.checks["dataset-registry-listener"] = registry.problem

    async def handle(record: object) -> None:
        await registry.on_catalog_event(getattr(record, "value", None) or b"")

    loop = ConsumerLoop(
        settings.kafka,
        name="dataset-registry",
        group_id=f"datapolis-{settings.service_name}-{group_suffix}",
        topics=[CATALOG_EVENTS],
        handler=handle,
        producer=runtime.require_producer(),
        dependencies=[runtime.ping_postgres],
        track_behind=True,
    )
    runtime.consumers.append(loop)
    registry.follow_progress(lambda: loop.behind)
    loop.start()
    return registry


def record_size_limits(settings: IngestSettings, producer: Producer) -> RecordSizeLimits:
    """Each dataset topic's own max.message.bytes, read from Kafka."""

    async def read(topic: str) -> int | None:
        return await topic_max_message_bytes(settings.kafka, topic)

    return RecordSizeLimits(read, max_request_size=producer.max_request_size)


async def _purge_idempotency_keys(store: IdempotencyStore) -> None:
    while True:
        await asyncio.sleep(PURGE_EVERY_S)
        try:
            purged = await store.purge_expired()
            if purged:
                log.info("purged %d expired idempotency key(s)", purged)
        except Exception as exc:
            log.warning("could not purge expired idempotency keys: %r", exc)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    config = ingest_settings(settings)
    registry: DatasetRegistry | None = None
    stats: StatsAggregator | None = None
    purge: asyncio.Task[None] | None = None
    records: Counter | None = None

    async def on_connected(runtime: Runtime) -> None:
        nonlocal registry, stats, purge, records

        def sink() -> GroupCommitSink:
            return GroupCommitSink(runtime.require_producer())

        registry = await start_registry(runtime, config, group_suffix="registry")
        # Whichever of this and the startup hook runs first registers it.
        records = records or records_counter(runtime.metrics.registry)
        stats = StatsAggregator(sink, interval_s=config.stats_interval_s, records=records)
        stats.start()
        idempotency = IdempotencyStore(
            runtime.pool, window_s=config.idempotency_window_s, lease_s=config.idempotency_lease_s
        )
        purge = asyncio.create_task(_purge_idempotency_keys(idempotency), name="idempotency-purge")
        app.state.registry = registry
        app.state.stats = stats
        app.state.ingestor = Ingestor(
            config,
            registry=registry,
            sink=sink,
            idempotency=idempotency,
            stats=stats,
            windows=DedupWindows(window_s=config.dedup_window_s, max_ids=config.dedup_max_ids),
            sizes=record_size_limits(config, runtime.require_producer()),
        )

    @contextlib.asynccontextmanager
    async def stop_ingestion(app: FastAPI) -> AsyncIterator[None]:
        nonlocal records
        # At startup, so /metrics lists the records counter before Kafka is reached.
        records = records or records_counter(app.state.runtime.metrics.registry)
        try:
            yield
        finally:
            # Before the runtime stops the producer: the last stats go out.
            if purge is not None:
                purge.cancel()
            if stats is not None:
                await stats.stop()
            # Before the runtime closes the pool, which waits for the
            # registry's LISTEN connection.
            if registry is not None:
                await registry.stop()

    app = create_service_app(
        config,
        title="datapolis ingest",
        description=datapolis_ingest.__doc__ or "",
        routers=[router],
        on_connected=on_connected,
        sync_keys=True,
        lifespans=[stop_ingestion],
    )
    return app
