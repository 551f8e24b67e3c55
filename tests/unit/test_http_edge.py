"""The HTTP edge needs nothing running: problem details, body limit, request
ids and metrics labels, on a small app built from the shared pieces."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client import generate_latest

from datapolis_shared.errors import Conflict, Unavailable
from datapolis_shared.http import problems
from datapolis_shared.http.middleware import (
    BodySizeLimitMiddleware,
    RequestIdMiddleware,
    UnhandledErrorMiddleware,
)
from datapolis_shared.metrics import MetricsMiddleware, ServiceMetrics


def _app(metrics: ServiceMetrics) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=2048)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(RequestIdMiddleware)

    @app.post("/datasets/{slug}/records")
    async def ingest(slug: str, request: Request) -> dict[str, int]:
        body = await request.body()
        return {"bytes": len(body)}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 409:
            raise Conflict("item already exists", code="item-exists", item_id=item_id)
        if item_id == 503:
            raise Unavailable("Kafka is down", retry_after_s=7)
        return {"id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    return app


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics("test")


@pytest.fixture
async def client(metrics: ServiceMetrics) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_app(metrics), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def _is_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:datapolis:problem:{code}"
    assert body["detail"]
    return body


async def test_validation_error_is_a_problem(client: httpx.AsyncClient) -> None:
    body = _is_problem(await client.get("/items/not-a-number"), 422, "validation-failed")
    assert body["errors"][0]["location"] == "path.item_id"  # type: ignore[index]


async def test_domain_errors_map_to_status_and_code(client: httpx.AsyncClient) -> None:
    body = _is_problem(await client.get("/items/409"), 409, "item-exists")
    assert body["item_id"] == 409
    response = await client.get("/items/503")
    _is_problem(response, 503, "unavailable")
    assert response.headers["retry-after"] == "7"


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    _is_problem(await client.get("/nowhere"), 404, "not-found")
    _is_problem(await client.delete("/items/1"), 405, "method-not-allowed")


async def test_a_bug_is_a_500_problem_without_internals(client: httpx.AsyncClient) -> None:
    body = _is_problem(await client.get("/boom"), 500, "internal-error")
    assert "bug" not in str(body)


async def test_declared_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    body = _is_problem(
        await client.post("/datasets/x/records", content=b"x" * 4096), 413, "payload-too-large"
    )
    assert body["max_bytes"] == 2048


async def test_streamed_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 512

    _is_problem(
        await client.post("/datasets/x/records", content=chunks()), 413, "payload-too-large"
    )
    ok = await client.post("/datasets/x/records", content=b"x" * 1000)
    assert ok.json() == {"bytes": 1000}


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/items/1", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/items/409")
    assert len(made.headers["x-request-id"]) == 32
    assert made.json()["request_id"] == made.headers["x-request-id"]


async def test_metrics_are_labelled_by_route_template(
    client: httpx.AsyncClient, metrics: ServiceMetrics
) -> None:
    for i in range(5):
        await client.get(f"/items/{i}")
    await client.get("/random/garbage/path")
    exposition = generate_latest(metrics.registry).decode()
    assert 'route="/items/{item_id}",status="200"} 5.0' in exposition
    assert 'route="unmatched"' in exposition
    assert "/items/3" not in exposition
    assert "garbage" not in exposition
