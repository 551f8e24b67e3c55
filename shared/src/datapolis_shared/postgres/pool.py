"""asyncpg pools bound to one service schema."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from datapolis_shared.errors import Unavailable
from datapolis_shared.settings import PostgresSettings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    PooledConnection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    # A plain connection or one borrowed from a pool: both run queries alike.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    PooledConnection = asyncpg.pool.PoolConnectionProxy
    Connection = asyncpg.Connection


async def create_pool(settings: PostgresSettings, *, schema: str | None = None) -> Pool:
    """A pool whose connections see ``schema`` first. Raises :class:`Unavailable`."""
    try:
        return await asyncpg.create_pool(
            settings.dsn.get_secret_value(),
            min_size=settings.min_size,
            max_size=settings.max_size,
            command_timeout=settings.command_timeout_s,
            timeout=5,
            server_settings={"search_path": schema or settings.db_schema},
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise Unavailable("PostgreSQL is unreachable; try again later") from exc


async def ping(pool: Pool, timeout_s: float = 3.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await pool.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise Unavailable("PostgreSQL did not answer; try again later") from exc
