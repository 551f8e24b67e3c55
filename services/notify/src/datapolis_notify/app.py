"""The notify HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import datapolis_notify
from datapolis_notify.api import deliveries as deliveries_api
from datapolis_notify.api import stream as stream_api
from datapolis_notify.api import subscriptions as subscriptions_api
from datapolis_notify.api.stream import StreamMetrics
from datapolis_notify.entitlements.feed import EntitlementFeed, start_entitlements
from datapolis_notify.settings import NotifySettings
from datapolis_shared.http.app import create_service_app
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings


def notify_settings(settings: ServiceSettings | None) -> NotifySettings:
    if settings is None:
        return NotifySettings()
    if isinstance(settings, NotifySettings):
        return settings
    return NotifySettings(**dict(settings))


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    config = notify_settings(settings)
    feeds: list[EntitlementFeed] = []

    async def on_connected(runtime: Runtime) -> None:
        # The API's own entitlement view (``app.state.entitlements``): a
        # stream decides each record from memory and learns of a revocation
        # as soon as this process reads it. The API's readiness does not
        # wait for it: its other routes need no view, and a stream holds
        # its records while the view is not current.
        feed = await start_entitlements(runtime, config.entitlements, readiness=False)
        feeds.append(feed)
        app.state.entitlements = feed.view

    @asynccontextmanager
    async def stream_metrics_lifespan(api: FastAPI) -> AsyncIterator[None]:
        # At startup rather than with the first stream, so /metrics lists the
        # server-sent event families (at 0) before anyone has opened one.
        api.state.stream_metrics = StreamMetrics(api.state.runtime.metrics.registry)
        yield

    @asynccontextmanager
    async def entitlements_lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for feed in feeds:
                await feed.stop()

    app = create_service_app(
        config,
        title="datapolis notify",
        description=datapolis_notify.__doc__ or "",
        routers=[
            subscriptions_api.router,
            deliveries_api.log_router,
            deliveries_api.dead_router,
            stream_api.router,
        ],
        on_connected=on_connected,
        sync_keys=True,
        lifespans=[stream_metrics_lifespan, entitlements_lifespan],
    )
    return app
