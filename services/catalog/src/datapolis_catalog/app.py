"""The catalog HTTP API and its wiring."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import datapolis_catalog
from datapolis_catalog.api import datasets, exports, organisations
from datapolis_catalog.api.deps import Catalog
from datapolis_catalog.api.problems import UNSTORABLE_VALUE
from datapolis_catalog.datasets import Links
from datapolis_catalog.provisioning import Provisioner
from datapolis_catalog.settings import CatalogSettings
from datapolis_shared.auth import ApiKeyStore, FailedAuthThrottle
from datapolis_shared.http import problems
from datapolis_shared.http.app import create_service_app
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings

log = logging.getLogger(__name__)


async def _unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL refused a value of the request (a NUL character in a text, a
    \\u0000 escape in a JSON Schema): the input is bad, so a 422, not a 500."""
    assert isinstance(exc, asyncpg.exceptions.DataError)
    # PostgreSQL's own words (encodings, byte values) are for the log only.
    log.warning("refused a value PostgreSQL cannot store: %s", exc)
    return problems.problem(
        422,
        UNSTORABLE_VALUE.code,
        "the request holds a value that cannot be stored, such as a NUL character "
        "(\\u0000) in a text",
        instance=request.url.path,
    )


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    if settings is None:
        settings = CatalogSettings()
    if not isinstance(settings, CatalogSettings):
        raise TypeError("the catalog needs CatalogSettings")
    catalog_settings = settings
    app: FastAPI

    async def on_connected(runtime: Runtime) -> None:
        # Catalog issues keys (sync_keys=False): its own table is the truth,
        # cached briefly so a revocation bites here within about a second.
        runtime.keys = ApiKeyStore(
            runtime.pool,
            operator_key=catalog_settings.operator_key.get_secret_value(),
            cache_ttl_s=catalog_settings.key_cache_ttl_s,
            throttle=FailedAuthThrottle(catalog_settings.auth),
        )
        provisioner = Provisioner(
            runtime.pool,
            catalog_settings.kafka,
            interval_s=catalog_settings.provisioning_interval_s,
        )
        provisioner.start()
        runtime.checks["topics"] = provisioner.problem
        app.state.catalog = Catalog(
            settings=catalog_settings,
            pool=runtime.pool,
            provisioner=provisioner,
            links=Links(
                kafka_bootstrap_servers=catalog_settings.kafka_public_bootstrap
                or catalog_settings.kafka.bootstrap_servers,
                ingest_url=catalog_settings.ingest_public_url,
                notify_url=catalog_settings.notify_public_url,
                consent_url=catalog_settings.consent_public_url,
            ),
        )

    app = create_service_app(
        catalog_settings,
        title="datapolis catalog",
        description=datapolis_catalog.__doc__ or "",
        routers=[organisations.router, datasets.router, exports.router],
        on_connected=on_connected,
        sync_keys=False,
        lifespans=[_stop_provisioner],
        input_codes=[UNSTORABLE_VALUE],
    )
    app.add_exception_handler(asyncpg.exceptions.DataError, _unstorable_value)
    return app


@asynccontextmanager
async def _stop_provisioner(app: FastAPI) -> AsyncIterator[None]:
    # Left before the runtime closes the pool the reconciliation uses.
    try:
        yield
    finally:
        catalog: Catalog | None = getattr(app.state, "catalog", None)
        if catalog is not None:
            await catalog.provisioner.stop()
            app.state.catalog = None
