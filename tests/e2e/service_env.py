"""The environment a service's process is started with in the end-to-end
tests: development mode, the test's Kafka and PostgreSQL schema, a port."""

from __future__ import annotations

import os


def service_env(
    name: str, *, kafka: str, database_url: str, schema: str, port: int, **extra: str
) -> dict[str, str]:
    """``<SERVICE>_*`` settings for ``python -m datapolis_<name> api``;
    ``extra`` adds or overrides variables (full names)."""
    prefix = name.upper()
    return {
        **os.environ,
        f"{prefix}_DEV": "true",
        f"{prefix}_KAFKA__BOOTSTRAP_SERVERS": kafka,
        f"{prefix}_POSTGRES__DSN": database_url,
        f"{prefix}_POSTGRES__DB_SCHEMA": schema,
        f"{prefix}_HTTP__PORT": str(port),
        f"{prefix}_LOG_JSON": "true",
        **extra,
    }
