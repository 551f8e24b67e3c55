"""``datapolis consent``: a data subject's consents (with a subject token)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from datapolis_cli import output
from datapolis_cli.context import JsonOption, State, use

app = typer.Typer(
    name="consent",
    help="Your consents as a data subject (authenticated by a subject token: "
    "`datapolis login --subject-token` or DATAPOLIS_SUBJECT_TOKEN).",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  datapolis consent grant home-energy --consumer org-lab "
    "--purpose dpv:ScientificResearch --until 2027-06-30\n\n"
    "  datapolis consent list\n\n  datapolis consent withdraw $K\n\n"
    "  datapolis consent export --output my-consents.json",
)

COLUMNS = ("consent_id", "consumer_org_id", "purpose", "status", "effective", "valid_until")
KEYS = (
    "consent_id", "dataset_id", "subject_id", "consumer_org_id", "agreement_id", "purpose",
    "valid_from", "valid_until", "status", "agreement_status", "effective", "ledger_sequence",
)  # fmt: skip


def _outcome(state: State, outcome: dict[str, Any], receipt: Path | None) -> None:
    if receipt is not None and outcome.get("receipt"):
        receipt.write_text(outcome["receipt"] + "\n", encoding="utf-8")
    if state.json:
        output.print_json(outcome)
        return
    output.record(outcome["consent"], KEYS)
    if outcome.get("deliveries_stop_within_s") is not None:
        output.note(f"Deliveries stop within {outcome['deliveries_stop_within_s']} s.")


@app.command("grant")
def grant(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="The dataset (your token's).")],
    consumer: Annotated[str, typer.Option(help="The consumer organisation's id.")],
    purpose: Annotated[str, typer.Option(help="One W3C DPV purpose.")],
    until: Annotated[str, typer.Option("--until", help="End of the period (ISO 8601).")],
    valid_from: Annotated[str | None, typer.Option("--from", help="Start (ISO 8601).")] = None,
    receipt: Annotated[Path | None, typer.Option(help="Write the receipt to this file.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Consent to a consumer receiving your records, for one purpose and a period."""
    state = use(ctx, as_json)
    body: dict[str, Any] = {
        "dataset": dataset, "consumer_org_id": consumer, "purpose": purpose, "valid_until": until,
    }  # fmt: skip
    if valid_from:
        body["valid_from"] = valid_from
    outcome = state.api("consent").post("/subjects/me/consents", json=body, auth="subject")
    _outcome(state, outcome, receipt)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Your consents on your token's dataset."""
    state = use(ctx, as_json)
    found = state.api("consent").get("/subjects/me/consents", auth="subject")
    output.show(found, as_json=state.json, columns=COLUMNS)


@app.command("show")
def show(
    ctx: typer.Context, consent_id: Annotated[str, typer.Argument()], as_json: JsonOption = False
) -> None:
    """Show one of your consents."""
    state = use(ctx, as_json)
    found = state.api("consent").get(f"/subjects/me/consents/{consent_id}", auth="subject")
    output.show(found, as_json=state.json, keys=KEYS)


@app.command("withdraw")
def withdraw(
    ctx: typer.Context,
    consent_id: Annotated[str, typer.Argument()],
    receipt: Annotated[Path | None, typer.Option(help="Write the receipt to this file.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Withdraw a consent: your records stop reaching the consumer."""
    state = use(ctx, as_json)
    outcome = state.api("consent").post(
        f"/subjects/me/consents/{consent_id}/withdraw", auth="subject"
    )
    _outcome(state, outcome, receipt)


@app.command("export")
def export(
    ctx: typer.Context,
    output_file: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it here (default: stdout).")
    ] = None,
) -> None:
    """Everything recorded about you on the dataset, as one JSON document."""
    state = use(ctx)
    document = state.api("consent").get("/subjects/me/export", auth="subject")
    if output_file is None:
        output.print_json(document)
        return
    output_file.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    output.note(f"Written to {output_file}")
