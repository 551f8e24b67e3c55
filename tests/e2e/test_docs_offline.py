"""Each service's /docs renders with no internet, as in an air-gapped cluster.

The four services run as real processes against the real Kafka and
PostgreSQL. Debian's Chromium, driven by Playwright (never a browser Playwright
downloads), opens each page with every request to a host other than the
service's own recorded and refused: the page must show every operation of the
service's OpenAPI document, and must have asked no outside host for anything.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, Request, Route, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from datapolis_shared.postgres.migrate import apply, service_migrations
from tests.conftest import _free_port
from tests.e2e.service_env import service_env
from tests.infra import REPO

SERVICES = ("catalog", "ingest", "consent", "notify")
CHROMIUM = Path(os.environ.get("DATAPOLIS_CHROMIUM", "/usr/bin/chromium"))
# Flags for a headless Chromium as root in a container, with nothing of its
# own going to the network (component updates, sync, first-run pages).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Generous for a loaded two-core machine; the pages render in about a second.
RENDER_TIMEOUT_MS = 30_000


@dataclass
class Service:
    name: str
    url: str
    process: asyncio.subprocess.Process


@dataclass
class Visit:
    """What a page asked for while it rendered."""

    origin: str
    outside: list[str] = field(default_factory=list)
    went_outside: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[str] = field(default_factory=list)


async def _start(name: str, kafka: str, database_url: str, schema: str, logs: Path) -> Service:
    """Migrates the service's schema (what its ``migrate`` command does), then
    starts its API; its output goes to ``logs/<name>.log``."""
    await apply(database_url, schema, service_migrations(f"datapolis_{name}"))
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"datapolis_{name}", "api",
        env=service_env(
            name, kafka=kafka, database_url=database_url, schema=schema, port=port,
            **{f"{name.upper()}_LOG_LEVEL": "WARNING"},
        ),
        cwd=REPO,
        stdout=(logs / f"{name}.log").open("wb"), stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    return Service(name, f"http://127.0.0.1:{port}", process)


async def _until_serving(service: Service, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            assert service.process.returncode is None, (
                f"{service.name} exited: {log.read_text()[-2000:]}"
            )
            try:
                if (await client.get(f"{service.url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{service.name} not serving after {timeout_s}s"
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def services(
    kafka_bootstrap: str,
    control_topics: None,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Service]]:
    run_id = uuid.uuid4().hex[:8]
    logs = tmp_path_factory.mktemp("docs-offline")
    started: dict[str, Service] = {}
    try:
        starts = [
            _start(name, kafka_bootstrap, database_url, f"docs_{name}_{run_id}", logs)
            for name in SERVICES
        ]
        results = await asyncio.gather(*starts, return_exceptions=True)
        for result in results:
            if isinstance(result, Service):
                started[result.name] = result
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await asyncio.gather(*(_until_serving(s, logs / f"{s.name}.log") for s in started.values()))
        yield started
    finally:
        for service in started.values():
            service.process.terminate()
        for service in started.values():
            try:
                await asyncio.wait_for(service.process.wait(), 20)
            except TimeoutError:
                service.process.kill()
        conn = await asyncpg.connect(database_url)
        try:
            for name in SERVICES:
                await conn.execute(f'DROP SCHEMA IF EXISTS "docs_{name}_{run_id}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium, launched once for every page. Playwright gives it a fresh
    profile directory of its own and drives the executable it is given."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian's; never "
            "`playwright install`), or set DATAPOLIS_CHROMIUM to its path",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )


async def _open(browser: Browser, url: str) -> tuple[Page, Visit]:
    """A page in a context of its own, where a request to any origin but
    ``url``'s is recorded and refused, so a page that needs the internet fails
    at once instead of waiting for it."""
    parts = urlsplit(url)
    visit = Visit(origin=f"{parts.scheme}://{parts.netloc}")
    context = await browser.new_context()

    async def only_own_origin(route: Route, request: Request) -> None:
        target = urlsplit(request.url)
        if f"{target.scheme}://{target.netloc}" == visit.origin:
            await route.continue_()
        else:
            visit.outside.append(request.url)
            visit.went_outside.set()
            await route.abort("blockedbyclient")

    await context.route("**/*", only_own_origin)
    page = await context.new_page()
    page.on("pageerror", lambda error: visit.errors.append(str(error)))
    await page.goto(url, wait_until="domcontentloaded")
    return page, visit


async def _rendered(page: Page, visit: Visit, selector: str, count: int) -> None:
    """Waits until ``count`` elements match ``selector``; fails as soon as the
    page asks an outside host for anything (the page that needs the internet
    would otherwise only fail at the timeout)."""
    shown = asyncio.ensure_future(
        page.wait_for_function(
            "([selector, count]) => document.querySelectorAll(selector).length >= count",
            arg=[selector, count],
            timeout=RENDER_TIMEOUT_MS,
        )
    )
    outside = asyncio.ensure_future(visit.went_outside.wait())
    try:
        await asyncio.wait({shown, outside}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        outside.cancel()
    if visit.outside:
        shown.cancel()
        pytest.fail(f"{page.url} asked outside hosts for {visit.outside}", pytrace=False)
    try:
        await shown
    except PlaywrightTimeout:
        found = await page.locator(selector).count()
        pytest.fail(
            f"{page.url} shows {found} of {count} operations after {RENDER_TIMEOUT_MS} ms; "
            f"page errors: {visit.errors}",
            pytrace=False,
        )


@pytest.mark.parametrize("name", SERVICES)
async def test_swagger_ui_renders_every_operation_offline(
    name: str, browser: Browser, services: dict[str, Service]
) -> None:
    service = services[name]
    async with httpx.AsyncClient(timeout=10) as client:
        document = (await client.get(f"{service.url}/openapi.json")).json()
    expected = _operations(document)
    assert expected, f"{name} documents no operation"

    page, visit = await _open(browser, f"{service.url}/docs")
    try:
        await _rendered(page, visit, ".opblock", len(expected))
        shown = await page.eval_on_selector_all(
            ".opblock",
            """blocks => blocks.map(block => [
                block.querySelector('.opblock-summary-method').textContent.trim(),
                block.querySelector('.opblock-summary-path').getAttribute('data-path'),
            ])""",
        )
        # An operation with two tags is shown under each: compare as sets.
        assert {tuple(operation) for operation in shown} == set(expected)
        assert visit.outside == [], f"/docs asked outside hosts for {visit.outside}"
        assert visit.errors == [], f"/docs raised {visit.errors}"
    finally:
        await page.context.close()


async def test_no_redoc_page(services: dict[str, Service]) -> None:
    """ReDoc's bundle fetches its logo from a CDN: the services serve no ReDoc."""
    async with httpx.AsyncClient(timeout=10) as client:
        for service in services.values():
            answer = await client.get(f"{service.url}/redoc")
            assert answer.status_code == 404, f"{service.name}: {answer.text[:300]}"
            assert answer.headers["content-type"] == "application/problem+json"
