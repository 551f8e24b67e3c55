"""The live-stats worker: a faust-streaming app over ``datapolis.ingest.events``.

``BatchIngested`` events (structured CloudEvents, keyed by dataset id) feed two
windowed tables, accepted and rejected records per dataset in tumbling windows
(60 s, expiring after an hour), and a table of each dataset's latest record
time. Every few seconds a timer turns the windows into records per minute,
last-hour counts and the rejection rate, and writes them to ``dataset_stats``,
which the API serves with each dataset.

Windows follow the Kafka timestamp of each event (set by ingest when it
publishes the batch), so a replay after a restart lands in the windows the
batches belonged to, not in "now". Tables are changelogged to Kafka, so a
restarted worker recovers its counts. A value that is not a ``BatchIngested``
event is logged and parked on the dead-letter topic; the stream moves on.

The worker serves /healthz, /readyz and /metrics on
``CATALOG_WORKER_HTTP__HOST`` / ``__PORT``: ready once PostgreSQL and Kafka
answer and the agent has its partitions and is not stuck on an event.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from datapolis_catalog.settings import CatalogSettings
from datapolis_catalog.stats import WindowCounts, save_stats, summarise, window_starts
from datapolis_shared.errors import InvalidInput
from datapolis_shared.events import parse_event
from datapolis_shared.events.cloudevents import from_structured
from datapolis_shared.events.ingest import BatchIngested
from datapolis_shared.kafka import DEAD_LETTERS
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings
from datapolis_shared.streams import AgentProgress, WorkerRuntime, create_faust_app

log = logging.getLogger(__name__)

CONSUMER_NAME = "catalog-stats"


# Event ids remembered per dataset to drop a batch delivered twice.
RECENT_EVENT_IDS = 500


def parse_batch(value: bytes | None) -> tuple[str, BatchIngested] | None:
    """The event id and batch event in a record; None for other ingest events
    (ignored). Raises :class:`InvalidInput` for a record that is not a valid event."""
    envelope = from_structured(value or b"")
    if envelope.type != BatchIngested.type:
        return None
    event = parse_event(envelope)
    assert isinstance(event, BatchIngested)
    return envelope.id, event


class StatsWorker:
    """The faust app and its tables, built from settings (never at import)."""

    def __init__(self, settings: CatalogSettings) -> None:
        self.settings = settings
        stats = settings.stats
        stats.data_dir.mkdir(parents=True, exist_ok=True)
        self.app = create_faust_app(
            settings, app_id="stats", datadir=str(stats.data_dir / "{conf.id}-data")
        )
        self.source = self.app.topic(
            stats.source_topic, key_serializer="raw", value_serializer="raw"
        )
        self.dead_letters = self.app.topic(
            DEAD_LETTERS, key_serializer="raw", value_serializer="raw"
        )
        self.window = faust.TumblingWindow(stats.window_s, expires=stats.expires_s)
        # Tables changelog as JSON (faust's default for tables).
        self.accepted = self.app.Table("accepted", default=int).using_window(self.window)
        self.rejected = self.app.Table("rejected", default=int).using_window(self.window)
        # dataset id -> {"last": latest received_at (epoch s), "partition": source
        # partition, "recent": ids of the latest events}. The partition lets a
        # worker write only the datasets it currently owns; the ids make
        # counting idempotent: at-least-once delivery (a crash before the
        # offset commit, faust re-seeking after recovery) replays events whose
        # counts the changelog already holds.
        self.datasets = self.app.Table("datasets", default=dict)
        # PostgreSQL, Kafka and readiness, started with the worker (WorkerRuntime).
        self.runtime = Runtime(settings=settings, metrics=ServiceMetrics(settings.service_name))
        self.progress = AgentProgress(self.app, CONSUMER_NAME, self.runtime.metrics)
        self.runtime.checks[f"consumer:{CONSUMER_NAME}"] = self.progress.problem
        self.app.agent(self.source, name="count-batches")(self._count)
        self.app.timer(stats.flush_interval_s, name="flush-stats")(self._flush)

    async def _count(self, stream: Any) -> None:
        async for event in stream.events():
            with self.progress.handling():
                outcome = await self._count_one(event)
            self.progress.count(outcome)

    async def _count_one(self, event: Any) -> str:
        """Count one event; says how it went (``processed``, ``dead_lettered``)."""
        try:
            parsed = parse_batch(event.value)
        except InvalidInput as exc:
            await self._dead_letter(event, exc.message)
            return "dead_lettered"
        if parsed is None:
            return "processed"
        event_id, batch = parsed
        key = batch.dataset_id
        state = self.datasets[key]
        recent: list[str] = state.get("recent", [])
        if event_id in recent:
            log.info("stats: batch event %s counted already; skipped", event_id)
            return "processed"
        self.accepted[key] += batch.accepted
        self.rejected[key] += batch.rejected
        self.datasets[key] = {
            "last": max(batch.received_at.timestamp(), state.get("last", 0.0)),
            "partition": event.message.partition,
            "recent": [*recent[-(RECENT_EVENT_IDS - 1) :], event_id],
        }
        return "processed"

    async def _dead_letter(self, event: Any, reason: str) -> None:
        message = event.message
        log.warning(
            "stats: skipping %s/%d@%d: %s", message.topic, message.partition, message.offset, reason
        )
        try:
            # force: send now and wait for the broker's ack, so the dead letter
            # is stored before the source offset can be committed.
            delivered = await self.dead_letters.send(
                force=True,
                key=message.key,
                value=message.value or b"",
                headers=[
                    *list(message.headers or ()),
                    ("dl_consumer", CONSUMER_NAME.encode()),
                    ("dl_error", reason[:2000].encode()),
                    ("dl_source_topic", message.topic.encode()),
                    ("dl_source_partition", str(message.partition).encode()),
                    ("dl_source_offset", str(message.offset).encode()),
                ],
            )
            await delivered
        except Exception:  # the skip is logged; a lost dead letter must not stall counting
            log.exception("stats: could not dead-letter %s@%d", message.topic, message.offset)

    def snapshot(self, now: float) -> list[Any]:
        stats = self.settings.stats
        starts = window_starts(now, stats.window_s, stats.expires_s)
        # The memory store keeps keys of partitions this worker lost in a
        # rebalance; their new owner reports them.
        owned = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == stats.source_topic
        }
        snapshots = []
        for key, state in list(self.datasets.items()):
            if state.get("partition") not in owned:
                continue
            windows = {}
            for start in starts:
                window = self.window.current(start)
                counts = WindowCounts(self.accepted[key][window], self.rejected[key][window])
                if counts.accepted or counts.rejected:
                    windows[start] = counts
            last = state.get("last")
            snapshots.append(
                summarise(key, windows, now=now, size_s=stats.window_s, last_record_at=last)
            )
        return snapshots

    async def _flush(self) -> None:
        try:
            await save_stats(self.runtime.pool, self.snapshot(time.time()))
        except Exception as exc:  # PostgreSQL down: the next tick writes fresher figures
            log.warning("stats: could not write dataset_stats: %r", exc)


def run_worker(settings: ServiceSettings) -> None:
    """``python -m datapolis_catalog worker``: runs until SIGTERM/SIGINT."""
    if not isinstance(settings, CatalogSettings):
        raise TypeError("the catalog worker needs CatalogSettings")
    worker = StatsWorker(settings)
    faust.Worker(
        worker.app,
        WorkerRuntime(worker.runtime),
        loglevel=settings.log_level,
        redirect_stdouts=False,
        override_logging=False,
    ).execute_from_commandline()
