"""The HTTP port of a stream worker: /healthz, /readyz and /metrics only.

The same endpoints, readiness checks and metrics registry as the APIs (see
``operations`` in ``datapolis_shared.http.app``), served by uvicorn inside the
worker's own event loop (asyncio's or faust's), on
``<PREFIX>_WORKER_HTTP__HOST`` / ``__PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI

from datapolis_shared.http.app import build_app
from datapolis_shared.http.server import uvicorn_options
from datapolis_shared.runtime import Runtime

log = logging.getLogger(__name__)


def create_worker_app(runtime: Runtime) -> FastAPI:
    """The probes of a worker whose Runtime the worker itself starts and stops:
    the app only shows it, from startup to shutdown."""

    @contextlib.asynccontextmanager
    async def show_runtime(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = runtime
        yield

    return build_app(
        title=f"datapolis {runtime.settings.service_name} worker",
        lifespans=[show_runtime],
        documented=False,
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The worker owns SIGTERM and SIGINT (its loop's handlers, or faust's)
        # and stops this server itself; uvicorn must not take them over.
        yield


class WorkerHttpServer:
    """Serves a worker's probes and metrics from ``start`` until ``stop``."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings.worker_http
        self.host = settings.host
        self.port = settings.port
        self._server = _Server(
            uvicorn.Config(
                create_worker_app(runtime), lifespan="on", **uvicorn_options(runtime.settings.http)
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen; returns once the port is bound (connections wait in its
        backlog until uvicorn accepts them). Raises :class:`OSError` when it
        cannot be (port taken): a worker that cannot be probed must not run."""
        try:
            # Bound here rather than by uvicorn, which exits the process on failure.
            sock = socket.create_server((self.host, self.port))
        except OSError as exc:
            log.error(  # noqa: TRY400 - the caller gets the exception, the log says what to change
                "cannot serve the worker's probes on %s:%d: %s (set <PREFIX>_WORKER_HTTP__PORT)",
                self.host,
                self.port,
                exc,
            )
            raise
        self._task = asyncio.create_task(self._server.serve([sock]), name="worker-http")
        log.info("worker probes and metrics on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, timeout=5)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
