"""``datapolis ledger``: check the consent ledger's hash chain."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from datapolis_cli import output
from datapolis_cli.context import JsonOption, use
from datapolis_cli.errors import CliError, ExitCode
from datapolis_cli.files import read_json

app = typer.Typer(
    name="ledger",
    help="The consent ledger: verify its chain.",
    no_args_is_help=True,
    epilog="Examples:\n\n  datapolis ledger verify\n\n  datapolis ledger verify --agreement $A\n\n"
    "  datapolis ledger verify --checkpoints saved-checkpoints.json",
)


@app.command("verify")
def verify(
    ctx: typer.Context,
    agreement: Annotated[str | None, typer.Option(help="Only this agreement's rows.")] = None,
    consent: Annotated[str | None, typer.Option(help="Only this consent's rows.")] = None,
    checkpoints: Annotated[
        str | None,
        typer.Option(help="A JSON file of signed checkpoints kept earlier, to match."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Have consent check the ledger's hash chain (and checkpoints you kept).

    Exits 0 if the chain holds, 1 if it is broken.
    """
    state = use(ctx, as_json)
    body: dict[str, Any] = {"agreement_id": agreement, "consent_id": consent}
    if checkpoints:
        saved = read_json(checkpoints)
        body["checkpoints"] = saved.get("items", saved) if isinstance(saved, dict) else saved
    result = state.api("consent").post(
        "/ledger/verify", json={k: v for k, v in body.items() if v is not None}
    )
    if state.json:
        output.print_json(result)
    else:
        output.record(result)
    if not result.get("ok"):
        raise CliError(
            "the ledger does not verify",
            exit_code=ExitCode.OTHER,
            detail=str(result.get("broken")),
            code="ledger-broken",
        )
