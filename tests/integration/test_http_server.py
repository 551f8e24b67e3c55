"""The HTTP server as it runs in production (uvicorn, httptools, with the shared
options): a request head over the limit gets 431 problem+json, a request that
is not HTTP gets 400 problem+json, and the server keeps answering."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from datapolis_consent.app import create_app
from datapolis_consent.settings import ConsentSettings
from datapolis_shared.http.server import uvicorn_options
from datapolis_shared.settings import ServiceSettings
from tests.kafka_util import eventually


@pytest.fixture
async def server(service_settings: ServiceSettings) -> AsyncIterator[str]:
    app = create_app(ConsentSettings(**dict(service_settings)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", **uvicorn_options(service_settings.http)
    )
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    await eventually(lambda: running.started, timeout_s=30)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    await asyncio.wait_for(task, 30)


async def _raw(url: str, *pieces: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def test_oversized_headers_get_431_problem_json(
    server: str, service_settings: ServiceSettings
) -> None:
    limit = service_settings.http.max_header_bytes
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        fits = await client.get("/healthz", headers={"x-padding": "a" * (limit // 2)})
        assert fits.status_code == 200

        refused = await client.get("/healthz", headers={"x-padding": "a" * (limit + 1)})
        assert refused.status_code == 431
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "headers-too-large"
        assert refused.json()["max_bytes"] == limit

    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_a_request_that_is_not_http_gets_400_problem_json(server: str) -> None:
    status, headers, body = await _raw(server, b"NOT HTTP AT ALL\r\n\r\n")

    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert b'"code": "malformed-http"' in body
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_a_head_over_the_limit_arriving_in_pieces_gets_431_problem_json(
    server: str, service_settings: ServiceSettings
) -> None:
    limit = service_settings.http.max_header_bytes
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * (limit + 10)

    # The head never ends: the server stops reading it at the limit.
    status, headers, body = await _raw(server, head[: limit // 2], head[limit // 2 :])

    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert b'"code": "headers-too-large"' in body
