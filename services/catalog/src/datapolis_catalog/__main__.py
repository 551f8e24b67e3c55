"""`python -m datapolis_catalog api|migrate|worker`."""

from __future__ import annotations

import sys

from datapolis_catalog.app import create_app
from datapolis_catalog.settings import CatalogSettings
from datapolis_catalog.worker import run_worker
from datapolis_shared.cli import ServiceCommands
from datapolis_shared.cli import main as cli_main

COMMANDS = ServiceCommands(
    package="datapolis_catalog",
    load_settings=CatalogSettings,
    create_app=create_app,
    run_worker=run_worker,
)


def main() -> None:
    sys.exit(cli_main(COMMANDS))


if __name__ == "__main__":
    main()
