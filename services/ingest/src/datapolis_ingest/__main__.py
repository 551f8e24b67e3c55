"""`python -m datapolis_ingest api|migrate|worker`."""

from __future__ import annotations

import sys

from datapolis_ingest.app import create_app
from datapolis_ingest.settings import IngestSettings
from datapolis_ingest.worker import run_worker
from datapolis_shared.cli import ServiceCommands
from datapolis_shared.cli import main as cli_main

COMMANDS = ServiceCommands(
    package="datapolis_ingest",
    load_settings=IngestSettings,
    create_app=create_app,
    run_worker=run_worker,
)


def main() -> None:
    sys.exit(cli_main(COMMANDS))


if __name__ == "__main__":
    main()
