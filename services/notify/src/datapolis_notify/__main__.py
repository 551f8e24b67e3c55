"""`python -m datapolis_notify api|migrate|worker`."""

from __future__ import annotations

import sys

from datapolis_notify.app import create_app
from datapolis_notify.settings import NotifySettings
from datapolis_notify.worker import run_worker
from datapolis_shared.cli import ServiceCommands
from datapolis_shared.cli import main as cli_main

COMMANDS = ServiceCommands(
    package="datapolis_notify",
    load_settings=NotifySettings,
    create_app=create_app,
    run_worker=run_worker,
)


def main() -> None:
    sys.exit(cli_main(COMMANDS))


if __name__ == "__main__":
    main()
