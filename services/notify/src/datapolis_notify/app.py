"""The notify HTTP API."""

from __future__ import annotations

from fastapi import FastAPI

import datapolis_notify
from datapolis_notify.api import deliveries as deliveries_api
from datapolis_notify.api import stream as stream_api
from datapolis_notify.api import subscriptions as subscriptions_api
from datapolis_notify.settings import NotifySettings
from datapolis_shared.http.app import create_service_app
from datapolis_shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or NotifySettings(),
        title="datapolis notify",
        description=datapolis_notify.__doc__ or "",
        routers=[
            subscriptions_api.router,
            deliveries_api.log_router,
            deliveries_api.dead_router,
            stream_api.router,
        ],
        sync_keys=True,
    )
