"""``datapolis tail``: follow a dataset's records live."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import httpx
import typer

from datapolis_cli import output, sse
from datapolis_cli.client import Api
from datapolis_cli.config import Profile
from datapolis_cli.context import JsonOption, key_values, use
from datapolis_cli.errors import CliError, ExitCode

EPILOG = (
    "Over server-sent events (the default), tail uses an active `sse` subscription of "
    "yours to the dataset, or creates one; what arrives is what your agreement lets you "
    "receive, projected on its fields. With --kafka it reads the dataset's topic "
    "directly, for those with access to the broker (the publisher, the operator). When "
    "notify ends the stream because the entitlement ended (agreement revoked, expired, "
    "dataset retired), tail exits 3 with the reason.\n\n"
    "Examples:\n\n"
    "  datapolis tail air-quality\n\n"
    "  datapolis tail crowd-density --purpose dpv:ScientificResearch --filter district=Centre\n\n"
    "  datapolis tail air-quality --kafka --from-beginning --max 10"
)


def _print(value: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(value, ensure_ascii=False), flush=True)
    else:
        output.out.print_json(data=value)


def find_or_create_subscription(
    notify: Api,
    slug: str,
    dataset_id: str,
    purpose: str | None,
    fields: list[str] | None,
    filters: dict[str, str],
) -> str:
    after: str | None = None
    while True:
        page = notify.get("/subscriptions", params={"limit": 100, "after": after})
        for sub in page.get("items", []):
            if (
                sub.get("channel") == "sse"
                and sub.get("status") == "active"
                and sub.get("dataset_id") == dataset_id
                and sub.get("purpose") == purpose
                and (sub.get("fields") or None) == (fields or None)
                and (sub.get("filter") or {}) == filters
            ):
                return str(sub["subscription_id"])
        after = page.get("next")
        if not after:
            break
    body: dict[str, Any] = {"dataset": slug, "channel": "sse", "filter": filters}
    if purpose:
        body["purpose"] = purpose
    if fields:
        body["fields"] = fields
    created = notify.post("/subscriptions", json=body)
    output.note(f"Created subscription {created['subscription_id']} (sse)")
    return str(created["subscription_id"])


def _follow_sse(notify: Api, subscription_id: str, max_records: int | None, as_json: bool) -> None:
    seen = 0
    last_id: str | None = None
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            with notify.stream(f"/subscriptions/{subscription_id}/events", headers=headers) as r:
                for event in sse.parse(r.iter_lines()):
                    last_id = event.id or last_id
                    if event.event == "end":
                        reason = json.loads(event.data or "{}").get("reason")
                        raise CliError(
                            "the stream ended",
                            exit_code=ExitCode.AUTH,
                            detail="notify closed it: the entitlement ended",
                            code=str(reason) if reason else None,
                        )
                    if event.event == "notification":
                        change = json.loads(event.data or "{}")
                        output.note(
                            f"notification: {change.get('type')} {change.get('subject', '')}"
                        )
                        continue
                    if event.event != "record":
                        continue
                    cloudevent = json.loads(event.data)
                    _print(cloudevent if as_json else cloudevent.get("data"), as_json)
                    seen += 1
                    if max_records is not None and seen >= max_records:
                        return
        except httpx.TransportError:
            # The connection dropped mid-stream: resume from the last event.
            output.note("Stream interrupted; reconnecting")
            continue


async def _follow_kafka(
    profile: Profile, topic: str, from_beginning: bool, max_records: int | None, as_json: bool
) -> None:
    # Imported here: aiokafka takes half a second to load, which every
    # other command would pay at start.
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

    # No consumer group: nothing is committed, every partition is read.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=profile.kafka_bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        await consumer.start()
    except Exception as exc:
        raise CliError(
            "Kafka is unavailable",
            exit_code=ExitCode.UNAVAILABLE,
            detail=f"{profile.kafka_bootstrap_servers}: {exc}",
            code="service-unreachable",
        ) from None
    try:
        seen = 0
        async for message in consumer:
            try:
                value: Any = json.loads(message.value or b"null")
            except ValueError:
                value = (message.value or b"").decode("utf-8", "replace")
            if as_json:
                headers = {k: v.decode("utf-8", "replace") for k, v in message.headers}
                value = {
                    "partition": message.partition, "offset": message.offset,
                    "key": (message.key or b"").decode("utf-8", "replace"),
                    "headers": headers, "value": value,
                }  # fmt: skip
            _print(value, as_json)
            seen += 1
            if max_records is not None and seen >= max_records:
                return
    finally:
        await consumer.stop()


def tail(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The dataset's slug.")],
    subscription: Annotated[
        str | None, typer.Option(help="Follow this sse subscription (default: find or create).")
    ] = None,
    purpose: Annotated[
        str | None, typer.Option(help="The purpose (W3C DPV) for a personal dataset.")
    ] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", metavar="<field>", help="Only these fields.")
    ] = None,
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", metavar="<field=value>", help="FIELD=VALUE records must match."),
    ] = None,
    kafka: Annotated[bool, typer.Option("--kafka", help="Read the topic from Kafka.")] = False,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="With --kafka: from the topic's start.")
    ] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many records.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a dataset's records live (server-sent events, or Kafka)."""
    state = use(ctx, as_json)
    profile = state.profile()
    dataset = Api(profile, "catalog").get(f"/datasets/{slug}")
    if kafka:
        try:
            asyncio.run(
                _follow_kafka(profile, dataset["topic"], from_beginning, max_records, state.json)
            )
        except KeyboardInterrupt:
            return
        return
    notify = Api(profile, "notify")
    subscription_id = subscription or find_or_create_subscription(
        notify, slug, dataset["dataset_id"], purpose, field, key_values(filter_, "--filter")
    )
    try:
        _follow_sse(notify, subscription_id, max_records, state.json)
    except KeyboardInterrupt:
        return
