"""The notify HTTP API."""

from __future__ import annotations

from fastapi import FastAPI

import datapolis_notify
from datapolis_notify.api import stream as stream_api
from datapolis_notify.settings import NotifySettings
from datapolis_shared.http.app import create_service_app
from datapolis_shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or NotifySettings(),
        title="datapolis notify",
        description=datapolis_notify.__doc__ or "",
        routers=[stream_api.router],
        sync_keys=True,
    )
