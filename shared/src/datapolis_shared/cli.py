"""The command line every service has: ``api``, ``migrate`` and ``worker``.

``python -m datapolis_<service> migrate`` is the separate prestart step that
applies migrations; the API never migrates on import or start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from datapolis_shared.http.server import uvicorn_options
from datapolis_shared.logs import configure_logging
from datapolis_shared.postgres.migrate import apply, service_migrations
from datapolis_shared.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceCommands:
    package: str
    load_settings: Callable[[], ServiceSettings]
    create_app: Callable[[ServiceSettings], FastAPI]
    # A worker owns its event loop (faust runs its own), so it is a plain call.
    run_worker: Callable[[ServiceSettings], None] | None = None


async def migrate(settings: ServiceSettings, package: str) -> list[str]:
    return await apply(
        settings.postgres.dsn.get_secret_value(),
        settings.postgres.db_schema,
        service_migrations(package),
    )


def main(commands: ServiceCommands, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {commands.package}")
    sub = parser.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    sub.add_parser("migrate", help="apply database migrations, then exit")
    if commands.run_worker is not None:
        sub.add_parser("worker", help="run the stream worker")
    args = parser.parse_args(argv)

    try:
        settings = commands.load_settings()
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.service_name, settings.log_level, json=settings.log_json)

    if args.command == "migrate":
        try:
            applied = asyncio.run(migrate(settings, commands.package))
        except OSError as exc:
            log.error("cannot reach PostgreSQL to migrate: %r", exc)  # noqa: TRY400 - no traceback for a down database
            return 1
        log.info(
            "schema %s is up to date (%d migration(s) applied now)",
            settings.postgres.db_schema,
            len(applied),
        )
        return 0
    if args.command == "worker" and commands.run_worker is not None:
        commands.run_worker(settings)
        return 0
    app = commands.create_app(settings)
    uvicorn.run(
        app,
        host=args.host or settings.http.host,
        port=args.port or settings.http.port,
        lifespan="on",
        **uvicorn_options(settings.http),
    )
    return 0
