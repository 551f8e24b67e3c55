"""The consent HTTP API."""

from __future__ import annotations

from fastapi import FastAPI

import datapolis_consent
from datapolis_consent.settings import ConsentSettings
from datapolis_shared.http.app import create_service_app
from datapolis_shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or ConsentSettings(),
        title="datapolis consent",
        description=datapolis_consent.__doc__ or "",
        sync_keys=True,
    )
