"""The catalog HTTP API."""

from __future__ import annotations

from fastapi import FastAPI

import datapolis_catalog
from datapolis_catalog.settings import CatalogSettings
from datapolis_shared.http.app import create_service_app
from datapolis_shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or CatalogSettings(),
        title="datapolis catalog",
        description=datapolis_catalog.__doc__ or "",
        sync_keys=False,
    )
