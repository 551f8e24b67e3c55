"""Running a service app in-process against the real broker and database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from datapolis_shared.postgres.migrate import Migration, apply
from datapolis_shared.runtime import Runtime
from datapolis_shared.settings import ServiceSettings


@contextlib.asynccontextmanager
async def running(
    app: FastAPI, *, migrations: list[Migration] | None = None, connect_timeout_s: float = 30
) -> AsyncIterator[httpx.AsyncClient]:
    """Start ``app`` (lifespan included), wait until it is connected, and yield
    a client for it."""
    settings: ServiceSettings = app.state.settings
    if migrations:
        await apply(
            settings.postgres.dsn.get_secret_value(), settings.postgres.db_schema, migrations
        )
    async with LifespanManager(app, startup_timeout=connect_timeout_s, shutdown_timeout=30):
        runtime: Runtime = app.state.runtime
        await asyncio.wait_for(runtime.connected.wait(), connect_timeout_s)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
