"""``datapolis agreement``: sharing agreements between organisations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from datapolis_cli import output
from datapolis_cli.context import JsonOption, State, use

app = typer.Typer(
    name="agreement",
    help="Sharing agreements: a consumer requests; the publisher grants, refuses, amends or "
    "revokes; the consumer terminates.",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  datapolis agreement request crowd-density --project 'Footfall study' "
    "--purpose dpv:ScientificResearch --field district --field count --until 2027-06-30\n\n"
    "  datapolis agreement grant $A --field district --receipt grant.jws\n\n"
    "  datapolis agreement revoke $A --reason 'the project ended early'",
)

COLUMNS = ("agreement_id", "dataset_id", "consumer_org_id", "status", "valid_until")
KEYS = (
    "agreement_id", "dataset_id", "publisher_org_id", "consumer_org_id", "project", "purposes",
    "requested_fields", "granted_fields", "valid_from", "valid_until", "status", "reason",
    "ledger_sequence",
)  # fmt: skip

ReceiptOption = Annotated[
    Path | None, typer.Option("--receipt", help="Write the signed receipt to this file.")
]
FieldsOption = Annotated[
    list[str] | None,
    typer.Option("--field", metavar="<field>", help="A field (repeat; nested: address.city)."),
]
UntilOption = Annotated[str | None, typer.Option("--until", help="End of the period (ISO 8601).")]
FromOption = Annotated[str | None, typer.Option("--from", help="Start of the period (ISO 8601).")]


def _outcome(state: State, outcome: dict[str, Any], receipt: Path | None) -> None:
    if receipt is not None and outcome.get("receipt"):
        receipt.write_text(outcome["receipt"] + "\n", encoding="utf-8")
    if state.json:
        output.print_json(outcome)
        return
    output.record(outcome["agreement"], KEYS)
    if outcome.get("deliveries_stop_within_s") is not None:
        output.note(f"Deliveries stop within {outcome['deliveries_stop_within_s']} s.")
    if receipt is not None and outcome.get("receipt"):
        output.note(f"Receipt written to {receipt}")


def _terms(fields: list[str] | None, valid_from: str | None, until: str | None) -> dict[str, Any]:
    terms = {"fields": fields or None, "valid_from": valid_from, "valid_until": until}
    return {k: v for k, v in terms.items() if v is not None}


@app.command("request")
def request(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="The dataset's slug or id.")],
    project: Annotated[str, typer.Option(help="The project's name.")],
    purpose: Annotated[
        list[str],
        typer.Option("--purpose", metavar="<purpose>", help="A W3C DPV purpose (repeat)."),
    ],
    field: Annotated[
        list[str], typer.Option("--field", metavar="<field>", help="A field asked for (repeat).")
    ],
    until: Annotated[str, typer.Option("--until", help="End of the period (ISO 8601).")],
    description: Annotated[str, typer.Option(help="What the project does.")] = "",
    valid_from: FromOption = None,
    as_json: JsonOption = False,
) -> None:
    """Request access to a shared or personal dataset (the consumer)."""
    state = use(ctx, as_json)
    body: dict[str, Any] = {
        "dataset": dataset,
        "project": {"name": project, "description": description},
        "purposes": purpose,
        "fields": field,
        "valid_until": until,
    }
    if valid_from:
        body["valid_from"] = valid_from
    created = state.api("consent").post("/agreements", json=body)
    output.show(created, as_json=state.json, keys=KEYS)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Your agreements, as consumer or publisher (the operator: all)."""
    state = use(ctx, as_json)
    output.show(state.api("consent").get("/agreements"), as_json=state.json, columns=COLUMNS)


@app.command("show")
def show(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument()],
    as_json: JsonOption = False,
) -> None:
    """Show one agreement."""
    state = use(ctx, as_json)
    found = state.api("consent").get(f"/agreements/{agreement_id}")
    output.show(found, as_json=state.json, keys=KEYS)


@app.command("grant")
def grant(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument()],
    field: FieldsOption = None,
    until: UntilOption = None,
    valid_from: FromOption = None,
    receipt: ReceiptOption = None,
    as_json: JsonOption = False,
) -> None:
    """Grant a request (the publisher), possibly narrowing fields and period."""
    state = use(ctx, as_json)
    outcome = state.api("consent").post(
        f"/agreements/{agreement_id}/grant", json=_terms(field, valid_from, until)
    )
    _outcome(state, outcome, receipt)


@app.command("refuse")
def refuse(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why (the consumer sees it).")],
    as_json: JsonOption = False,
) -> None:
    """Refuse a request (the publisher)."""
    state = use(ctx, as_json)
    outcome = state.api("consent").post(
        f"/agreements/{agreement_id}/refuse", json={"reason": reason}
    )
    _outcome(state, outcome, None)


@app.command("amend")
def amend(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument()],
    field: FieldsOption = None,
    until: UntilOption = None,
    valid_from: FromOption = None,
    receipt: ReceiptOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a granted agreement's fields or period (the publisher)."""
    state = use(ctx, as_json)
    outcome = state.api("consent").post(
        f"/agreements/{agreement_id}/amend", json=_terms(field, valid_from, until)
    )
    _outcome(state, outcome, receipt)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why (the consumer sees it).")],
    receipt: ReceiptOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a granted agreement (the publisher): deliveries stop."""
    state = use(ctx, as_json)
    outcome = state.api("consent").post(
        f"/agreements/{agreement_id}/revoke", json={"reason": reason}
    )
    _outcome(state, outcome, receipt)


@app.command("terminate")
def terminate(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument()],
    reason: Annotated[str | None, typer.Option(help="Why.")] = None,
    as_json: JsonOption = False,
) -> None:
    """End a granted agreement (the consumer)."""
    state = use(ctx, as_json)
    outcome = state.api("consent").post(
        f"/agreements/{agreement_id}/terminate", json={"reason": reason} if reason else {}
    )
    _outcome(state, outcome, None)
