"""Plain-SQL migrations, applied by a separate command (never on import).

A service's migrations are the shared ones (outbox, inbox, API keys) followed by
its own ``migrations/NNNN_name.sql`` files, all applied inside the service's
schema. Each file runs once, in its own transaction, recorded with its checksum
so an edited migration is caught instead of silently ignored.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

log = logging.getLogger(__name__)

# One lock id for all migrators: two `migrate` runs at once serialise.
_ADVISORY_LOCK = 7_331_001


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(package: str, *, prefix: str) -> list[Migration]:
    folder: Traversable = resources.files(package).joinpath("migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(f"{prefix}:{f.name}", f.read_text()) for f in files]


def service_migrations(service_package: str) -> list[Migration]:
    return load("datapolis_shared.postgres", prefix="shared") + load(
        service_package, prefix="service"
    )


class MigrationError(RuntimeError):
    pass


async def apply(dsn: str, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply what is not applied yet; returns the versions applied now."""
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    TEXT PRIMARY KEY,
                   checksum   TEXT NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version} changed after it was applied "
                        f"in schema {schema}; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            log.info("applied migration %s in schema %s", migration.version, schema)
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK)
        await conn.close()
    return applied_now
