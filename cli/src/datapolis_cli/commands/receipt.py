"""``datapolis receipt``: verify consent receipts offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from datapolis_cli import output
from datapolis_cli.context import JsonOption, use
from datapolis_cli.files import read_object, read_text

app = typer.Typer(
    name="receipt",
    help="Receipts of grants, amendments, withdrawals and revocations.",
    no_args_is_help=True,
    epilog="Examples:\n\n  datapolis receipt verify grant.jws\n\n"
    "  datapolis receipt verify grant.jws --jwks jwks.json   (no network at all)\n\n"
    "  datapolis agreement grant $A --json | jq -r .receipt | datapolis receipt verify -",
)


@app.command("verify")
def verify(
    ctx: typer.Context,
    receipt: Annotated[
        str, typer.Argument(help="A file holding the receipt (compact JWS), the JWS itself, or -.")
    ],
    jwks: Annotated[
        str | None,
        typer.Option(help="A JWKS file (default: consent's /.well-known/jwks.json)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify a receipt's signature against the published keys; print its content.

    Exits 0 if it verifies, 6 if it does not.
    """
    # Imported here: the JOSE library and cryptography are slow to load,
    # which every other command would pay at start.
    from datapolis_cli.receipts import verify as verify_receipt  # noqa: PLC0415

    state = use(ctx, as_json)
    is_file = receipt == "-" or Path(receipt).exists()
    token = read_text(receipt) if is_file else receipt
    if jwks:
        keys = read_object(jwks)
    else:
        keys = state.api("consent").get("/.well-known/jwks.json", auth="none")
    payload, kid = verify_receipt(token, keys)
    if state.json:
        output.print_json({"valid": True, "kid": kid, "payload": payload})
        return
    output.note(f"[green]Valid[/] receipt, signed by key {kid}")
    summary: dict[str, Any] = {}
    for part in ("header", "processing", "parties", "event"):
        section = payload.get(part)
        if isinstance(section, dict):
            summary.update({f"{part}.{k}": v for k, v in section.items()})
    output.record(summary)
