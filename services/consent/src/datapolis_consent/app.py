"""The consent HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

import datapolis_consent
from datapolis_consent import agreements, ledger_api, subjects, wellknown
from datapolis_consent.agreements import on_dataset_retired
from datapolis_consent.api import agreements as agreements_api
from datapolis_consent.api import subjects as subjects_api
from datapolis_consent.keys import KeyRing
from datapolis_consent.projection import CONSUMER, DatasetProjection, RetirementHook
from datapolis_consent.settings import ConsentSettings
from datapolis_consent.subject_tokens import SubjectTokenVerifier
from datapolis_shared.http.app import create_service_app
from datapolis_shared.kafka import ConsumerLoop
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings

log = logging.getLogger(__name__)


async def expire_agreements(runtime: Runtime, *, interval_s: float) -> None:
    """Every ``interval_s``, ends the granted agreements and subject consents
    whose period is over. Every replica runs it; each expiry locks its row
    and the others skip it, so each expires once (its own ledger row and
    event)."""
    await runtime.connected.wait()
    while True:
        try:
            ended = await agreements.expire_due(runtime.pool)
            if ended:
                log.info("%d agreement(s) expired", ended)
            consents = await subjects.expire_due(runtime.pool)
            if consents:
                log.info("%d subject consent(s) expired", consents)
        except asyncio.CancelledError:
            raise
        except Exception:
            # PostgreSQL away, or the tables not migrated yet: try again next time.
            log.warning("expiring agreements failed; trying again", exc_info=True)
        await asyncio.sleep(interval_s)


def expiry_lifespan(interval_s: float) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(
            expire_agreements(app.state.runtime, interval_s=interval_s), name="agreement-expiry"
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


@asynccontextmanager
async def subject_tokens_lifespan(app: FastAPI) -> AsyncIterator[None]:
    verifier = SubjectTokenVerifier(app.state.settings.subject_token_issuers)
    app.state.subject_tokens = verifier
    try:
        yield
    finally:
        await verifier.aclose()


def consent_settings(settings: ServiceSettings | None) -> ConsentSettings:
    if settings is None:
        return ConsentSettings()
    if isinstance(settings, ConsentSettings):
        return settings
    return ConsentSettings(**dict(settings))


def start_dataset_projection(
    runtime: Runtime, *, topic: str, on_retired: RetirementHook = on_dataset_retired
) -> ConsumerLoop:
    """Follow ``topic`` (catalog's events) into the ``datasets`` table.

    The loop has a consumer group of its own (the runtime's key sync reads
    the same topic in another), shared by the service's replicas: each
    applies its partitions' events. ``/readyz`` reports it as
    ``consumer:datasets``. Besides PostgreSQL answering, it needs consent's
    tables: started before the migration, it holds its record until they
    exist rather than parking catalog's events on the dead letters."""
    projection = DatasetProjection(runtime.pool, on_retired=on_retired)

    async def handle(record: object) -> None:
        await projection.on_catalog_event(getattr(record, "value", None) or b"")

    return runtime.add_consumer(
        name=CONSUMER,
        topics=[topic],
        handler=handle,
        dependencies=[projection.require_tables],
    )


def create_app(
    settings: ServiceSettings | None = None,
    *,
    on_retired: RetirementHook = on_dataset_retired,
) -> FastAPI:
    """``on_retired`` runs once per retired dataset, in the transaction that
    records the retirement."""
    config = consent_settings(settings)
    # Built before the app, so a key that cannot sign stops the service at start.
    receipt_keys = KeyRing.load(
        config.receipts.signing_key.get_secret_value(), config.receipts.retired_keys
    )

    async def on_connected(runtime: Runtime) -> None:
        start_dataset_projection(runtime, topic=config.catalog_events_topic, on_retired=on_retired)

    app = create_service_app(
        config,
        title="datapolis consent",
        description=datapolis_consent.__doc__ or "",
        routers=[wellknown.router, ledger_api.router, agreements_api.router, subjects_api.router],
        on_connected=on_connected,
        sync_keys=True,
        offline_paths=[wellknown.JWKS_PATH],
        lifespans=[expiry_lifespan(config.expiry_interval_s), subject_tokens_lifespan],
    )
    app.state.receipt_keys = receipt_keys
    return app
