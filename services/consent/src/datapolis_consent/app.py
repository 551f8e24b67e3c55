"""The consent HTTP API."""

from __future__ import annotations

from fastapi import FastAPI

import datapolis_consent
from datapolis_consent import wellknown
from datapolis_consent.keys import KeyRing
from datapolis_consent.settings import ConsentSettings
from datapolis_shared.http.app import create_service_app
from datapolis_shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    if settings is None:
        settings = ConsentSettings()
    if not isinstance(settings, ConsentSettings):
        raise TypeError("consent needs ConsentSettings")
    # Built before the app, so a key that cannot sign stops the service at start.
    receipt_keys = KeyRing.load(
        settings.receipts.signing_key.get_secret_value(), settings.receipts.retired_keys
    )
    app = create_service_app(
        settings,
        title="datapolis consent",
        description=datapolis_consent.__doc__ or "",
        routers=[wellknown.router],
        sync_keys=True,
        offline_paths=[wellknown.JWKS_PATH],
    )
    app.state.receipt_keys = receipt_keys
    return app
