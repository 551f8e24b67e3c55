"""Every route of every service parses its JSON body strictly (RFC 8259):
Python's json would let NaN, 1e400 and lone surrogates through to code and
to PostgreSQL, which cannot handle them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from datapolis_catalog.app import create_app as catalog
from datapolis_catalog.settings import CatalogSettings
from datapolis_consent.app import create_app as consent
from datapolis_consent.settings import ConsentSettings
from datapolis_ingest.app import create_app as ingest
from datapolis_ingest.settings import IngestSettings
from datapolis_notify.app import create_app as notify
from datapolis_notify.settings import NotifySettings
from datapolis_shared.http.strict_json import StrictJsonRoute
from datapolis_shared.settings import ServiceSettings


@pytest.mark.parametrize(
    ("create_app", "settings"),
    [
        (catalog, CatalogSettings),
        (ingest, IngestSettings),
        (consent, ConsentSettings),
        (notify, NotifySettings),
    ],
)
def test_every_route_parses_strict_json(
    create_app: Callable[..., FastAPI], settings: type[ServiceSettings]
) -> None:
    app = create_app(settings(dev=True, log_json=False))
    loose = [
        route.path
        for route in app.routes
        if isinstance(route, APIRoute) and not isinstance(route, StrictJsonRoute)
    ]
    assert loose == [], "declare these routers with APIRouter(route_class=StrictJsonRoute)"
