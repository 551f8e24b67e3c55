"""``datapolis key``: API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from datapolis_cli import output
from datapolis_cli.context import JsonOption, use

app = typer.Typer(
    name="key",
    help="API keys of an organisation: issue, list, revoke.",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  datapolis key issue org-1a2b3c --scope publish --scope ingest --label producer\n\n"
    "  datapolis key list org-1a2b3c\n\n  datapolis key revoke org-1a2b3c key_9f8e",
)

COLUMNS = ("key_id", "scopes", "label", "issued_at", "revoked_at")
SCOPES = "read, publish, ingest, consent, subscribe, admin"


@app.command("issue")
def issue(
    ctx: typer.Context,
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", metavar="<scope>", help=f"A scope ({SCOPES}).")
    ],
    label: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a key; its token is shown only now."""
    state = use(ctx, as_json)
    issued = state.api("catalog").post(
        f"/organisations/{org_id}/keys", json={"scopes": scope, "label": label}
    )
    output.show(issued, as_json=state.json, keys=("key_id", "org_id", "scopes", "label", "token"))
    if not state.json:
        output.note("Keep the token now: it is not shown again.")


@app.command("list")
def list_(
    ctx: typer.Context,
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    as_json: JsonOption = False,
) -> None:
    """List an organisation's keys (never their tokens)."""
    state = use(ctx, as_json)
    keys = state.api("catalog").get(f"/organisations/{org_id}/keys")
    output.show(keys, as_json=state.json, columns=COLUMNS)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a key: every service refuses it within seconds."""
    state = use(ctx, as_json)
    revoked = state.api("catalog").call("DELETE", f"/organisations/{org_id}/keys/{key_id}")
    output.show(revoked, as_json=state.json, keys=COLUMNS)
