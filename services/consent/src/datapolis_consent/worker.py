"""The consent worker: publishes signed checkpoints of the ledger's head.

Every ``CONSENT_CHECKPOINT_INTERVAL_S`` (60 s by default) it signs the head
with the receipt keys and stores the checkpoint, when the head moved since the
last one (``datapolis_consent.ledger.publish``: safe with several replicas).
The checkpoints are served publicly by the API at ``/ledger/checkpoints``.

It serves /healthz, /readyz and /metrics on ``CONSENT_WORKER_HTTP__HOST`` /
``__PORT``: ready once PostgreSQL and Kafka answer and while checkpointing
works (the latest attempt did not fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from prometheus_client import Counter, Gauge

from datapolis_consent.app import consent_settings
from datapolis_consent.keys import KeyRing
from datapolis_consent.ledger.checkpoints import Signer
from datapolis_consent.ledger.jws import KeyRingSigner
from datapolis_consent.ledger.publish import checkpoint_if_moved, latest_checkpoint
from datapolis_consent.settings import ConsentSettings
from datapolis_shared.errors import DatapolisError, public_message
from datapolis_shared.http.worker import WorkerHttpServer
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

CHECK_NAME = "checkpoints"


class CheckpointMetrics:
    """No labels: one series each, however many checkpoints."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        registry = metrics.registry
        self.published = Counter(
            "datapolis_ledger_checkpoints_published_total",
            "Checkpoints of the ledger's head signed and stored by this worker",
            registry=registry,
        )
        self.failures = Counter(
            "datapolis_ledger_checkpoint_failures_total",
            "Checkpointing attempts that failed (PostgreSQL down, tables missing, ...)",
            registry=registry,
        )
        self.last_sequence = Gauge(
            "datapolis_ledger_last_checkpoint_sequence",
            "Ledger sequence of the latest stored checkpoint, by any replica (0: none yet)",
            registry=registry,
        )
        self.last_at = 0.0
        self.last_age = Gauge(
            "datapolis_ledger_last_checkpoint_age_seconds",
            "Seconds since the latest stored checkpoint was signed (0: none yet)",
            registry=registry,
        )
        self.last_age.set_function(lambda: time.time() - self.last_at if self.last_at else 0.0)


class CheckpointPublisher:
    def __init__(
        self, runtime: Runtime, signer: Signer, *, interval_s: float, metrics: CheckpointMetrics
    ) -> None:
        self.runtime = runtime
        self.signer = signer
        self.interval_s = interval_s
        self.metrics = metrics
        self._problem: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-checkpoints")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def problem(self) -> str | None:
        """The readiness check: None while checkpointing works."""
        return self._problem

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> None:
        try:
            async with self.runtime.pool.acquire() as conn:
                made = await checkpoint_if_moved(conn, self.signer)
                latest = await latest_checkpoint(conn)
        except Exception as exc:  # a failed tick is retried at the next one
            self.metrics.failures.inc()
            # /readyz is answered to anyone: a sentence, the driver's error goes to the log.
            reason = public_message(exc) if isinstance(exc, DatapolisError) else type(exc).__name__
            self._problem = f"checkpointing failed: {reason}"
            log.warning("ledger: could not checkpoint the head: %r", exc)
            return
        self._problem = None
        if made is not None:
            self.metrics.published.inc()
            log.info("ledger: checkpoint signed at sequence %d", made.sequence)
        if latest is not None:
            self.metrics.last_sequence.set(latest.sequence)
            self.metrics.last_at = latest.checkpointed_at.timestamp()


async def serve(settings: ConsentSettings, stop: asyncio.Event) -> None:
    # Built first, so a key that cannot sign stops the worker at start.
    signer = KeyRingSigner(
        KeyRing.load(
            settings.receipts.signing_key.get_secret_value(), settings.receipts.retired_keys
        )
    )
    runtime = Runtime(settings=settings, metrics=ServiceMetrics(settings.service_name))
    publisher = CheckpointPublisher(
        runtime,
        signer,
        interval_s=settings.checkpoint_interval_s,
        metrics=CheckpointMetrics(runtime.metrics),
    )
    runtime.checks[CHECK_NAME] = publisher.problem

    async def on_connected(runtime: Runtime) -> None:
        publisher.start()
        log.info("ledger checkpoints every %.1f s", settings.checkpoint_interval_s)

    # Probes and metrics first: /healthz answers while PostgreSQL is still awaited.
    http = WorkerHttpServer(runtime)
    await http.start()
    # The worker writes no outbox rows: the API's replicas relay them.
    await runtime.start(on_connected, sync_keys=False, relay=False)
    try:
        await stop.wait()
    finally:
        await http.stop()
        await publisher.stop()
        await runtime.stop()


def run_worker(settings: ServiceSettings) -> None:
    """``python -m datapolis_consent worker``: runs until SIGTERM/SIGINT."""
    config = consent_settings(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(main())
