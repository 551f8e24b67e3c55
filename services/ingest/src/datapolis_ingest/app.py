"""The ingest HTTP API."""

from __future__ import annotations

from fastapi import FastAPI

import datapolis_ingest
from datapolis_ingest.settings import IngestSettings
from datapolis_shared.http.app import create_service_app
from datapolis_shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or IngestSettings(),
        title="datapolis ingest",
        description=datapolis_ingest.__doc__ or "",
        sync_keys=True,
    )
