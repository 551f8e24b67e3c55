"""The app factory every service uses: lifespan, errors, middleware, health."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from datapolis_shared.auth import Principal
from datapolis_shared.http import problems
from datapolis_shared.http.middleware import (
    BodySizeLimitMiddleware,
    HeaderSizeLimitMiddleware,
    RequestIdMiddleware,
)
from datapolis_shared.http.strict_json import StrictJsonRoute
from datapolis_shared.logs import configure_logging
from datapolis_shared.metrics import MetricsMiddleware, ServiceMetrics
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings

OnConnected = Callable[[Runtime], Awaitable[None]]

# Probes and metrics, served alike by every API and every stream worker (see
# ``datapolis_shared.http.worker``): both keep their Runtime in app.state.
operations = APIRouter(tags=["operations"], route_class=StrictJsonRoute)


@operations.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@operations.get("/readyz", summary="Readiness: Kafka, PostgreSQL, consumers")
async def readyz(request: Request) -> Response:
    runtime = await get_runtime(request)
    state = await runtime.readiness()
    if state.ready:
        return JSONResponse({"status": "ready", "checks": state.checks})
    return problems.problem(
        503,
        "not-ready",
        "the service cannot do its job right now",
        checks=state.checks,
        headers={"Retry-After": "5"},
    )


@operations.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    runtime = await get_runtime(request)
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter] = (),
    on_connected: OnConnected | None = None,
    sync_keys: bool = True,
    version: str = "0.1.0",
) -> FastAPI:
    configure_logging(settings.service_name, settings.log_level, json=settings.log_json)
    metrics = ServiceMetrics(settings.service_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings=settings, metrics=metrics)
        app.state.runtime = runtime
        await runtime.start(on_connected, sync_keys=sync_keys)
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
    app.state.settings = settings
    problems.install(app)
    # Outermost first: request id, then metrics, then the head and body limits.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.http.max_body_bytes)
    app.add_middleware(HeaderSizeLimitMiddleware, max_bytes=settings.http.max_header_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)

    app.include_router(operations)
    for router in routers:
        app.include_router(router)
    return app


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs a plain def dependency in a thread pool,
    # a thread hop on every request for an attribute read.
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("x-api-key")


async def authenticate(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller, from ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    return await runtime.require_keys().resolve(_bearer(request))


Caller = Annotated[Principal, Depends(authenticate)]


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(caller: Caller) -> Principal:
        caller.require(scope)
        return caller

    return dependency
