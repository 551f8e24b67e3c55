"""The raw-topic worker: records produced straight to ``raw.<slug>`` are
validated with the same rules as HTTP batches and forwarded to the dataset
topic, or to the dead letters with their reasons.

``python -m datapolis_ingest worker``. One consumer group subscribed to the
pattern ``^raw\\..*`` (new datasets are picked up within the metadata refresh,
5 s). Each polled batch of a partition is validated, written, and its offset
committed only once Kafka acknowledged every forwarded record and dead letter;
a failure to write retries the same batch without committing. A crash
therefore repeats records rather than losing them, and a record without an id
gets ``ce_id = <topic>-<partition>-<offset>``, the same on every repeat, so
consumers can drop the repeats.

The worker serves /healthz, /readyz and /metrics on
``INGEST_WORKER_HTTP__HOST`` / ``__PORT`` (the API's checks: Kafka,
PostgreSQL, its consumers assigned and making progress).

faust-streaming was the first choice; on aiokafka 0.14 its pattern
subscription never delivered records, so this is a plain aiokafka consumer
with the guarantees spelled out above.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
import uvloop
from aiokafka import ConsumerRecord

from datapolis_ingest.app import ingest_settings, record_size_limits, start_registry
from datapolis_ingest.dedup import RecordIdWindow
from datapolis_ingest.ingestion import DedupWindows
from datapolis_ingest.limits import RecordSizeLimits, too_deep, too_deep_text
from datapolis_ingest.propagation import NotKnownYet
from datapolis_ingest.records import Malformed, Preparer, Rejection, dead_letters
from datapolis_ingest.registry import DatasetRegistry
from datapolis_ingest.settings import IngestSettings
from datapolis_ingest.stats import StatsAggregator, records_counter
from datapolis_ingest.validation import FieldError
from datapolis_shared.errors import Conflict
from datapolis_shared.events.base import raw_topic
from datapolis_shared.http.worker import WorkerHttpServer
from datapolis_shared.kafka import (
    TRANSIENT_ERRORS,
    OutgoingRecord,
    Producer,
    dead_letter_record,
)
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

RAW_PATTERN = r"^raw\..*"
RAW_PREFIX = raw_topic("")
CONSUMER_NAME = "raw-validator"


@dataclass
class Forward:
    records: list[OutgoingRecord]
    reserved_ids: list[str] = field(default_factory=list)
    window: RecordIdWindow | None = None
    count: Callable[[], None] = lambda: None


class RawForwarder:
    """Sorts one partition's batch of raw records into Kafka records to write."""

    def __init__(
        self,
        settings: IngestSettings,
        registry: DatasetRegistry,
        stats: StatsAggregator,
        windows: DedupWindows,
        sizes: RecordSizeLimits,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._stats = stats
        self._windows = windows
        self._sizes = sizes

    async def outgoing(
        self, topic: str, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> Forward:
        """What to write for ``records`` (and what to count once it is written)."""
        slug = topic[len(RAW_PREFIX) :]
        dataset = self._registry.get(slug)
        deadline = time.monotonic() + self._settings.unknown_dataset_grace_s
        # Catalog's events may still be on their way (the dataset, or its
        # first schema version, applied a moment after the dataset).
        while (dataset is None or dataset.schema is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            dataset = self._registry.get(slug)
        if dataset is None:
            error = f"no dataset {slug!r} is registered for topic {topic}"
            return Forward(
                [dead_letter_record(r, consumer=CONSUMER_NAME, error=error) for r in records]
            )
        items: list[object] = []
        for record in records:
            try:
                item = orjson.loads(record.value or b"")
            except orjson.JSONDecodeError as exc:
                text = (record.value or b"").decode("utf-8", errors="replace")
                if exc.msg.startswith("depth limit"):
                    items.append(too_deep_text(text))
                    continue
                items.append(
                    Malformed(0, text, f"not valid JSON: {exc.msg} at column {exc.pos + 1}")
                )
                continue
            items.append(too_deep(item, record.value) or item)
        window = self._windows.for_dataset(dataset.dataset_id)
        try:
            validator = dataset.accepting()
        except (Conflict, NotKnownYet) as refused:
            rejections = [
                Rejection(i, [FieldError("", refused.message)], item)
                for i, item in enumerate(items)
            ]
            outgoing: list[OutgoingRecord] = []
            reserved: list[str] = []
            duplicates = 0
        else:
            preparer = Preparer(
                dataset,
                validator,
                producer=dataset.publisher_id,
                id_prefix="",
                max_record_bytes=await self._sizes.for_topic(dataset.topic),
            )
            prepared = preparer.prepare(
                items,
                window,
                time.monotonic(),
                raws=[r.value for r in records],
                fallback_keys=[r.key for r in records],
                fallback_ids=[f"{r.topic}-{r.partition}-{r.offset}" for r in records],
            )
            rejections, outgoing = prepared.rejections, prepared.outgoing
            reserved, duplicates = prepared.reserved_ids, prepared.duplicates
        for rejection in rejections:
            rejection.source_topic = topic
            rejection.source_partition = records[rejection.index].partition
            rejection.source_offset = records[rejection.index].offset
            rejection.line = None
        letters = dead_letters(
            rejections, dataset, producer_org_id=dataset.publisher_id, channel="kafka"
        )
        return Forward(
            outgoing + letters,
            reserved,
            self._windows.for_dataset(dataset.dataset_id),
            lambda: self._stats.add(
                dataset_id=dataset.dataset_id,
                slug=dataset.slug,
                producer_org_id=dataset.publisher_id,
                channel="kafka",
                accepted=len(outgoing),
                rejected=len(rejections),
                duplicates=duplicates,
            ),
        )


class RawValidator:
    """The batch handler of the raw.* consumer: validate and forward one
    partition's records. The shared ConsumerLoop commits only after this
    returns and retries it, without committing, while Kafka is down."""

    def __init__(self, forwarder: RawForwarder, producer: Producer) -> None:
        self._forwarder = forwarder
        self._producer = producer
        self.forwarded = 0

    async def handle(self, topic: str, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        forward = await self._forwarder.outgoing(topic, records)
        try:
            await self._producer.send_many(forward.records)
        except TRANSIENT_ERRORS:
            # Not written: free the ids so the retry does not count them as
            # duplicates of themselves.
            if forward.window is not None:
                forward.window.release(forward.reserved_ids)
            raise
        if forward.window is not None:
            forward.window.commit(forward.reserved_ids, time.monotonic())
        forward.count()
        self.forwarded += len(forward.records)


async def serve(settings: IngestSettings, stop: asyncio.Event) -> None:
    runtime = Runtime(settings=settings, metrics=ServiceMetrics(settings.service_name))
    records = records_counter(runtime.metrics.registry)
    stats_holder: list[StatsAggregator] = []
    registry_holder: list[DatasetRegistry] = []

    async def on_connected(runtime: Runtime) -> None:
        producer = runtime.require_producer()
        registry = await start_registry(runtime, settings, group_suffix="worker-registry")
        registry_holder.append(registry)
        stats = StatsAggregator(
            lambda: producer, interval_s=settings.stats_interval_s, records=records
        )
        stats.start()
        stats_holder.append(stats)
        windows = DedupWindows(window_s=settings.dedup_window_s, max_ids=settings.dedup_max_ids)
        sizes = record_size_limits(settings, producer)
        validator = RawValidator(RawForwarder(settings, registry, stats, windows, sizes), producer)
        runtime.add_consumer(
            name=CONSUMER_NAME,
            pattern=RAW_PATTERN,
            batch_handler=validator.handle,
            max_records=2000,
        )
        log.info("raw-topic worker running (pattern %s)", RAW_PATTERN)

    # Probes and metrics first: /healthz answers while Kafka is still awaited.
    http = WorkerHttpServer(runtime)
    await http.start()
    await runtime.start(on_connected, sync_keys=False)
    try:
        await stop.wait()
    finally:
        await http.stop()
        for stats in stats_holder:
            await stats.stop()
        for registry in registry_holder:
            await registry.stop()
        await runtime.stop()


def run_worker(settings: ServiceSettings) -> None:
    config = ingest_settings(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    uvloop.run(main())
