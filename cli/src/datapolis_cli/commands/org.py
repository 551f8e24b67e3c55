"""``datapolis org``: organisations."""

from __future__ import annotations

from typing import Annotated

import typer

from datapolis_cli import output
from datapolis_cli.context import JsonOption, use

app = typer.Typer(
    name="org",
    help="Organisations: create (operator), list, show.",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  datapolis org create 'Transit Authority' --kind public-authority --email ops@transit.example"
    "\n\n  datapolis org list\n\n  datapolis org show org-1a2b3c",
)

COLUMNS = ("org_id", "name", "kind", "contact_email", "created_at")
KINDS = ("public-authority", "company", "association", "research", "other")


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The organisation's name.")],
    email: Annotated[str, typer.Option("--email", help="Contact e-mail.")],
    kind: Annotated[str, typer.Option(help=f"One of: {', '.join(KINDS)}.")] = "company",
    as_json: JsonOption = False,
) -> None:
    """Create an organisation (the operator's key)."""
    state = use(ctx, as_json)
    created = state.api("catalog").post(
        "/organisations", json={"name": name, "kind": kind, "contact_email": email}
    )
    output.show(created, as_json=state.json, keys=COLUMNS)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the organisations."""
    state = use(ctx, as_json)
    output.show(state.api("catalog").get("/organisations"), as_json=state.json, columns=COLUMNS)


@app.command("show")
def show(
    ctx: typer.Context,
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    as_json: JsonOption = False,
) -> None:
    """Show one organisation."""
    state = use(ctx, as_json)
    output.show(state.api("catalog").get(f"/organisations/{org_id}"), as_json=state.json)
