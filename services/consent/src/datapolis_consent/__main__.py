"""`python -m datapolis_consent api|migrate|worker`."""

from __future__ import annotations

import sys

from datapolis_consent.app import create_app
from datapolis_consent.settings import ConsentSettings
from datapolis_consent.worker import run_worker
from datapolis_shared.cli import ServiceCommands
from datapolis_shared.cli import main as cli_main

COMMANDS = ServiceCommands(
    package="datapolis_consent",
    load_settings=ConsentSettings,
    create_app=create_app,
    run_worker=run_worker,
)


def main() -> None:
    sys.exit(cli_main(COMMANDS))


if __name__ == "__main__":
    main()
