"""Migrations: applied once, in order, in the service's own schema."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from datapolis_shared.postgres.migrate import Migration, MigrationError, apply


async def test_apply_twice_is_harmless_and_edits_are_caught(database_url: str) -> None:
    schema = f"t_mig_{uuid.uuid4().hex[:8]}"
    first = [Migration("service:0001_a.sql", "CREATE TABLE a (id INT PRIMARY KEY);")]
    second = [*first, Migration("service:0002_b.sql", "CREATE TABLE b (id INT);")]
    try:
        assert await apply(database_url, schema, first) == ["service:0001_a.sql"]
        assert await apply(database_url, schema, second) == ["service:0002_b.sql"]
        assert await apply(database_url, schema, second) == []
        edited = [Migration("service:0001_a.sql", "CREATE TABLE a (id BIGINT);"), second[1]]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply(database_url, schema, edited)
    finally:
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def test_failed_migration_leaves_nothing_half_applied(database_url: str) -> None:
    schema = f"t_mig_{uuid.uuid4().hex[:8]}"
    broken = [Migration("service:0001_x.sql", "CREATE TABLE x (id INT); SELECT 1/0;")]
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await apply(database_url, schema, broken)
        conn = await asyncpg.connect(database_url)
        try:
            exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.x")
            versions = await conn.fetchval(f'SELECT count(*) FROM "{schema}".schema_migrations')
        finally:
            await conn.close()
        assert exists is None
        assert versions == 0
    finally:
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
