"""The /docs page every app serves needs nothing but the app: its script,
style and icon come from the app's own /docs/assets, which answer like any
other route (problem+json errors) and stay out of the OpenAPI document.
The browser test is tests/e2e/test_docs_offline.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from datapolis_shared.http.app import build_app

# Every URL an HTML page makes the browser load: scripts, styles, icons.
LOADED = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(title="docs test")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://service"
    ) as client:
        yield client


async def test_docs_page_loads_only_the_apps_own_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    loaded = LOADED.findall(page.text)
    assert len(loaded) == 3, loaded  # script, style, icon
    for url in loaded:
        assert url.startswith("/docs/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    assert "://" not in page.text.replace("window.location.origin", "")
    assert '"validatorUrl": null' in page.text


async def test_docs_page_follows_the_root_path() -> None:
    # Behind a proxy that strips a prefix, the page must ask for the prefixed URLs.
    app = build_app(title="docs test")
    transport = httpx.ASGITransport(app=app, root_path="/catalog")
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        page = await client.get("/docs")
    assert {url.rsplit("/", 1)[0] for url in LOADED.findall(page.text)} == {"/catalog/docs/assets"}
    assert "url: '/catalog/openapi.json'" in page.text


async def test_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs/oauth2-redirect")
    assert page.status_code == 200
    assert "://" not in page.text


async def test_missing_asset_and_wrong_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/docs/assets/missing.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not-found"

    posted = await client.post("/docs/assets/swagger-ui.css")
    assert posted.status_code == 405
    assert posted.headers["content-type"] == "application/problem+json"
    assert posted.json()["code"] == "method-not-allowed"
    assert posted.headers["allow"] == "GET, HEAD"


async def test_no_redoc_and_no_docs_route_in_the_document(client: httpx.AsyncClient) -> None:
    # ReDoc's bundle loads its logo from a CDN whatever its options.
    redoc = await client.get("/redoc")
    assert redoc.status_code == 404
    assert redoc.headers["content-type"] == "application/problem+json"
    document = (await client.get("/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith(("/docs", "/redoc"))]
