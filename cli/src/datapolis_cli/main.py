"""The ``datapolis`` command: global options, the command groups, exit codes."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from datapolis_cli import output
from datapolis_cli.commands import (
    agreement,
    consent,
    dataset,
    key,
    ledger,
    login,
    org,
    push,
    receipt,
    subscription,
    tail,
)
from datapolis_cli.context import State
from datapolis_cli.errors import EXIT_CODES_HELP, CliError, ExitCode

app = typer.Typer(
    name="datapolis",
    help=(
        "The datapolis platform from the command line: organisations and keys, datasets, "
        "pushing and following records, sharing agreements, consents, subscriptions, "
        "receipts and the ledger.\n\n"
        "Configure once with `datapolis login` (or DATAPOLIS_* environment variables), "
        "then for example:\n\n"
        "  datapolis dataset list\n\n"
        "  datapolis push air-quality readings.ndjson\n\n"
        "  datapolis tail air-quality\n\n" + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="Profile of the config file to use (default: DATAPOLIS_PROFILE, then the "
            "file's default profile).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print results as JSON (for scripts).")
    ] = False,
) -> None:
    ctx.obj = State(profile_name=profile, json=as_json)


app.command("login", help=login.login.__doc__, epilog=login.EPILOG)(login.login)
for module in (org, key, dataset, agreement, consent, subscription, receipt, ledger):
    app.add_typer(module.app)
app.command("push", help=push.push.__doc__, epilog=push.EPILOG)(push.push)
app.command("tail", help=tail.tail.__doc__, epilog=tail.EPILOG)(tail.tail)


def run() -> None:
    """Entry point: a problem becomes its title, detail and code on stderr and
    the exit code its kind says, never a traceback."""
    try:
        result = app(standalone_mode=False)
    except CliError as exc:
        output.error(exc)
        sys.exit(int(exc.exit_code))
    except typer.Abort:
        output.err.print("Aborted.")
        sys.exit(int(ExitCode.OTHER))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # Usage errors (Typer's own copy of Click's exceptions): its message
        # and exit code 2.
        show = getattr(exc, "show", None)
        exit_code = getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        if os.environ.get("DATAPOLIS_DEBUG"):
            raise
        output.error(
            CliError(
                "unexpected error",
                detail=f"{exc.__class__.__name__}: {exc} (DATAPOLIS_DEBUG=1 shows where)",
            )
        )
        sys.exit(int(ExitCode.OTHER))
    sys.exit(result if isinstance(result, int) else 0)
