"""faust-streaming apps configured the datapolis way.

Stream workers (catalog's live stats, ingest's raw-topic validation) are faust
apps built here, so every worker gets the same broker settings, acks=all, and
at-least-once processing: an offset is committed only after the agent finished
with the event.

A worker runs ``faust.Worker(app, WorkerRuntime(runtime))``: the shared
:class:`Runtime` (PostgreSQL, Kafka, readiness) and the worker's HTTP port
(/healthz, /readyz, /metrics) start before the app, and an
:class:`AgentProgress` per agent tells readiness whether it has its
partitions and is not stuck, as ``ConsumerLoop`` does for plain consumers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import faust
import mode

from datapolis_shared.http.worker import WorkerHttpServer
from datapolis_shared.kafka import CONSUMED_OUTCOMES
from datapolis_shared.kafka.options import ssl_context
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import KafkaSettings, ServiceSettings


def broker_options(kafka: KafkaSettings) -> dict[str, Any]:
    """faust's ``broker`` and ``broker_credentials`` from the settings every
    other Kafka client reads (``client_options``): the same hosts, TLS
    context and SASL user, so a worker reaches a SASL_SSL cluster as the
    producer and the consumer loops do."""
    hosts = [h.strip() for h in kafka.bootstrap_servers.split(",") if h.strip()]
    context = ssl_context(kafka)
    credentials: faust.types.auth.CredentialsT | None = None
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        # faust derives the protocol from the context: SASL_SSL with one,
        # SASL_PLAINTEXT without.
        credentials = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return {
        "broker": ";".join(f"kafka://{h}" for h in hosts),
        "broker_credentials": credentials,
    }


def create_faust_app(settings: ServiceSettings, *, app_id: str, **overrides: Any) -> faust.App:
    options: dict[str, Any] = {
        **broker_options(settings.kafka),
        "store": "memory://",
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "topic_replication_factor": settings.kafka.replication_factor,
        "topic_partitions": 3,
        "web_enabled": False,
        "broker_commit_every": 500,
        "broker_commit_interval": 1.0,
        "loghandlers": [],
    }
    options.update(overrides)
    return faust.App(f"datapolis-{settings.service_name}-{app_id}", **options)


class AgentProgress:
    """Readiness of one faust agent, in ``ConsumerLoop.problem``'s terms: it
    has its partitions (rebalance and table recovery done) and no event has
    been in hand for longer than ``stuck_after_s``. Also counts its events in
    ``datapolis_events_consumed_total``."""

    def __init__(
        self, app: faust.App, name: str, metrics: ServiceMetrics, *, stuck_after_s: float = 60.0
    ) -> None:
        self.name = name
        self._app = app
        self._metrics = metrics
        self._stuck_after_s = stuck_after_s
        self._busy_since: float | None = None
        for outcome in CONSUMED_OUTCOMES:  # the series exist, at 0, before the first event
            metrics.events_consumed.labels(name, outcome)

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Around the handling of one event."""
        self._busy_since = time.monotonic()
        try:
            yield
        finally:
            self._busy_since = None

    def count(self, outcome: str) -> None:
        """One event done: ``processed`` or ``dead_lettered``."""
        self._metrics.events_consumed.labels(self.name, outcome).inc()

    async def problem(self) -> str | None:
        """Why the agent cannot do its job, or None (a Runtime check)."""
        # False until the worker has its partitions and recovered its tables
        # (and again during a rebalance, which stops the agents anyway).
        if not self._app.tables.actives_ready:
            return "waiting for its partitions (joining its consumer group, recovering tables)"
        busy_since = self._busy_since
        if busy_since is not None and time.monotonic() - busy_since > self._stuck_after_s:
            return f"no progress for {time.monotonic() - busy_since:.0f}s"
        return None


class WorkerRuntime(mode.Service):
    """What a faust worker runs beside its app: the service's Runtime and the
    worker's HTTP port. Handed to ``faust.Worker`` before the app, so it
    starts first (/healthz answers while the app joins its group and recovers
    its tables) and stops when the worker does."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self._http = WorkerHttpServer(runtime)

    async def on_start(self) -> None:
        await self._http.start()
        # No outbox relay: a stream worker announces nothing through the outbox.
        await self.runtime.start(sync_keys=False, relay=False)

    async def on_stop(self) -> None:
        await self._http.stop()
        await self.runtime.stop()
