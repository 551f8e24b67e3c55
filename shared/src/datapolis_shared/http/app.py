"""The app factory every service uses: lifespan hooks, errors, middleware,
health, and an OpenAPI document that lists every problem an operation answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.middleware import Middleware

from datapolis_shared.auth import Principal
from datapolis_shared.http import problems
from datapolis_shared.http.docs import install_docs
from datapolis_shared.http.middleware import (
    BodySizeLimitMiddleware,
    HeaderSizeLimitMiddleware,
    RequestIdMiddleware,
    UnhandledErrorMiddleware,
)
from datapolis_shared.http.openapi import (
    NOT_READY,
    ProblemCode,
    install_openapi,
    problem_responses,
)
from datapolis_shared.http.strict_json import StrictJsonRoute
from datapolis_shared.logs import configure_logging
from datapolis_shared.metrics import MetricsMiddleware, ServiceMetrics
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings

OnConnected = Callable[[Runtime], Awaitable[None]]
# Something an app holds from startup to shutdown: entered in the order given
# once the app starts, left in the reverse order when it stops.
LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]

PROBE_PATHS = frozenset({"/healthz", "/readyz"})

# Probes and metrics, served alike by every API and every stream worker (see
# ``datapolis_shared.http.worker``): both keep their Runtime in app.state.
operations = APIRouter(tags=["operations"], route_class=StrictJsonRoute)


class Alive(BaseModel):
    status: Literal["alive"]


class Ready(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(examples=[{"postgres": "ok", "kafka": "ok", "outbox": "ok"}])


@operations.get("/healthz", summary="Liveness: the process answers", response_model=Alive)
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@operations.get(
    "/readyz",
    summary="Readiness: Kafka, PostgreSQL, consumers",
    response_model=Ready,
    responses=problem_responses(NOT_READY),
)
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
    # datapolis_ready as of this scrape, whether or not anything probed /readyz.
    await runtime.readiness()
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def build_app(
    *,
    title: str,
    description: str = "",
    version: str = "0.1.0",
    lifespans: Sequence[LifespanHook] = (),
    middleware: Sequence[Middleware] = (),
    documented: bool = True,
    input_codes: Sequence[ProblemCode] = (),
    offline_paths: Collection[str] = (),
) -> FastAPI:
    """The app every HTTP server of the project runs: problem+json errors, the
    probes, the completed OpenAPI document, and ``lifespans`` around its life.
    Every request passes the request id and the unhandled-error middleware
    first (so a 500 carries the id), then ``middleware``, outermost first.
    ``offline_paths`` answer from memory, needing neither Kafka nor
    PostgreSQL: like the probes, their documents list no 503 ``unavailable``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for hook in lifespans:
                await stack.enter_async_context(hook(app))
            yield

    stack = [Middleware(RequestIdMiddleware), Middleware(UnhandledErrorMiddleware), *middleware]
    if documented:
        app = FastAPI(
            title=title,
            description=description,
            version=version,
            lifespan=lifespan,
            middleware=stack,
            # /docs from the package (install_docs), not from a CDN; no ReDoc
            docs_url=None,
            redoc_url=None,
        )
        install_docs(app)
        install_openapi(
            app,
            authenticate=authenticate,
            probe_paths=PROBE_PATHS | frozenset(offline_paths),
            input_codes=input_codes,
        )
    else:
        app = FastAPI(
            title=title,
            lifespan=lifespan,
            middleware=stack,
            openapi_url=None,
            docs_url=None,
            redoc_url=None,
        )
    problems.install(app)
    app.include_router(operations)
    return app


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter] = (),
    on_connected: OnConnected | None = None,
    sync_keys: bool = True,
    lifespans: Sequence[LifespanHook] = (),
    input_codes: Sequence[ProblemCode] = (),
    version: str = "0.1.0",
    offline_paths: Collection[str] = (),
) -> FastAPI:
    """A service's API. Its Runtime connects in the background once the app
    starts; ``on_connected`` runs when Kafka and PostgreSQL answer.
    ``lifespans`` run inside the Runtime's: they end before it stops, so they
    may still use the pool and the producer while they shut down.
    ``input_codes`` are problem codes any operation with input can answer;
    ``offline_paths`` are routes that need neither Kafka nor PostgreSQL."""
    configure_logging(settings.service_name, settings.log_level, json=settings.log_json)
    metrics = ServiceMetrics(settings.service_name)

    @asynccontextmanager
    async def runtime_lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings=settings, metrics=metrics)
        app.state.runtime = runtime
        await runtime.start(on_connected, sync_keys=sync_keys)
        try:
            yield
        finally:
            await runtime.stop()

    app = build_app(
        title=title,
        description=description,
        version=version,
        lifespans=[runtime_lifespan, *lifespans],
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(HeaderSizeLimitMiddleware, max_bytes=settings.http.max_header_bytes),
            Middleware(BodySizeLimitMiddleware, max_bytes=settings.http.max_body_bytes),
        ],
        input_codes=input_codes,
        offline_paths=offline_paths,
    )
    app.state.settings = settings

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
    client = request.client.host if request.client else None
    return await runtime.require_keys().resolve(_bearer(request), client=client)


Caller = Annotated[Principal, Depends(authenticate)]


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(caller: Caller) -> Principal:
        caller.require(scope)
        return caller

    return dependency
