"""``datapolis subscription``: notify's subscriptions, their health and dead letters."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from datapolis_cli import output
from datapolis_cli.context import JsonOption, key_values, use
from datapolis_cli.errors import CliError, ExitCode

app = typer.Typer(
    name="subscription",
    help="Subscriptions (webhook, sse, kafka): create, list, test, health, dead letters, replay.",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  datapolis subscription create --dataset air-quality --channel webhook "
    "--url https://partner.example/hooks\n\n"
    "  datapolis subscription test $S\n\n  datapolis subscription health $S\n\n"
    "  datapolis subscription dead-letters --subscription $S\n\n"
    "  datapolis subscription replay --subscription $S --since 2026-12-01T00:00:00Z",
)

COLUMNS = ("subscription_id", "dataset_id", "channel", "status", "url", "created_at")
KEYS = (
    "subscription_id", "consumer_id", "dataset_id", "channel", "url", "purpose", "fields",
    "filter", "notifications", "themes", "status", "disabled_reason", "kafka_topic", "created_at",
)  # fmt: skip
DEAD_COLUMNS = ("delivery_id", "subscription_id", "event_type", "record_count", "attempts",
                "last_error", "dead_at")  # fmt: skip


@app.command("create")
def create(
    ctx: typer.Context,
    channel: Annotated[str, typer.Option(help="webhook, sse or kafka.")] = "webhook",
    dataset: Annotated[str | None, typer.Option(help="The dataset's slug or id.")] = None,
    url: Annotated[str | None, typer.Option(help="The webhook's https URL.")] = None,
    purpose: Annotated[str | None, typer.Option(help="W3C DPV purpose (personal data).")] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", metavar="<field>", help="Only these fields.")
    ] = None,
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", metavar="<field=value>", help="FIELD=VALUE records must match."),
    ] = None,
    notification: Annotated[
        list[str] | None,
        typer.Option(
            "--notification", metavar="<kind>", help="agreements, datasets or endpoint (repeat)."
        ),
    ] = None,
    theme: Annotated[
        list[str] | None, typer.Option("--theme", metavar="<theme>", help="New datasets of it.")
    ] = None,
    scheme: Annotated[
        str | None, typer.Option(help="Webhook signatures: v1 (HMAC) or v1a (Ed25519).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Subscribe; a webhook's signing key is shown only now."""
    state = use(ctx, as_json)
    body: dict[str, Any] = {
        "channel": channel, "dataset": dataset, "url": url, "purpose": purpose,
        "fields": field or None, "signature_scheme": scheme,
    }  # fmt: skip
    body = {k: v for k, v in body.items() if v is not None}
    if filter_:
        body["filter"] = key_values(filter_, "--filter")
    if notification:
        body["notifications"] = notification
    if theme:
        body["themes"] = theme
    created = state.api("notify").post("/subscriptions", json=body)
    output.show(created, as_json=state.json, keys=(*KEYS, "signing_key"))
    if not state.json and created.get("signing_key"):
        output.note("Keep the signing key now: it is not shown again.")


@app.command("list")
def list_(
    ctx: typer.Context,
    every: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Your subscriptions (the operator: all), oldest first."""
    state = use(ctx, as_json)
    items: list[Any] = []
    after: str | None = None
    while True:
        page = state.api("notify").get("/subscriptions", params={"limit": 100, "after": after})
        items.extend(page.get("items", []))
        after = page.get("next")
        if not every or not after:
            break
    output.show(items, as_json=state.json, columns=COLUMNS)


@app.command("show")
def show(
    ctx: typer.Context,
    subscription_id: Annotated[str, typer.Argument()],
    as_json: JsonOption = False,
) -> None:
    """Show one subscription."""
    state = use(ctx, as_json)
    found = state.api("notify").get(f"/subscriptions/{subscription_id}")
    output.show(found, as_json=state.json, keys=KEYS)


@app.command("delete")
def delete(
    ctx: typer.Context,
    subscription_id: Annotated[str, typer.Argument()],
    as_json: JsonOption = False,
) -> None:
    """Delete a subscription (what was queued for it is withheld; its log stays)."""
    state = use(ctx, as_json)
    state.api("notify").call("DELETE", f"/subscriptions/{subscription_id}")
    if state.json:
        output.print_json({"deleted": subscription_id})
    else:
        output.note(f"Deleted {subscription_id}")


@app.command("test")
def send_test(
    ctx: typer.Context,
    subscription_id: Annotated[str, typer.Argument()],
    as_json: JsonOption = False,
) -> None:
    """Queue a test notification to the endpoint."""
    state = use(ctx, as_json)
    queued = state.api("notify").post(f"/subscriptions/{subscription_id}/test")
    output.show(queued, as_json=state.json)


@app.command("health")
def health(
    ctx: typer.Context,
    subscription_id: Annotated[str, typer.Argument()],
    as_json: JsonOption = False,
) -> None:
    """Attempts, failures, last success and failure, state."""
    state = use(ctx, as_json)
    found = state.api("notify").get(f"/subscriptions/{subscription_id}/health")
    output.show(found, as_json=state.json)


@app.command("dead-letters")
def dead_letters(
    ctx: typer.Context,
    subscription: Annotated[str | None, typer.Option(help="Only this subscription's.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601.")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    as_json: JsonOption = False,
) -> None:
    """Messages given up after the last retry."""
    state = use(ctx, as_json)
    page = state.api("notify").get(
        "/dead-letters",
        params={"subscription_id": subscription, "since": since, "until": until, "limit": limit},
    )
    output.show(page.get("items", []), as_json=state.json, columns=DEAD_COLUMNS)


@app.command("replay")
def replay(
    ctx: typer.Context,
    delivery_id: Annotated[
        str | None, typer.Argument(help="One dead letter's delivery id.")
    ] = None,
    subscription: Annotated[str | None, typer.Option(help="Every dead letter of it.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Replay all your dead letters (no filter).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Put dead letters back in the queue (checked again at the attempt)."""
    state = use(ctx, as_json)
    notify = state.api("notify")
    if delivery_id:
        replayed = notify.post(f"/dead-letters/{delivery_id}/replay")
    elif subscription or since or until or every:
        body = {"subscription_id": subscription, "since": since, "until": until}
        replayed = notify.post(
            "/dead-letters/replay", json={k: v for k, v in body.items() if v is not None}
        )
    else:
        raise CliError(
            "say what to replay",
            exit_code=ExitCode.USAGE,
            detail="a DELIVERY_ID, or --subscription/--since/--until, or --all",
        )
    output.show(replayed, as_json=state.json)
