"""``datapolis dataset``: the catalog's datasets."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from datapolis_cli import output
from datapolis_cli.context import JsonOption, State, use
from datapolis_cli.errors import CliError, ExitCode
from datapolis_cli.files import read_object

app = typer.Typer(
    name="dataset",
    help="Datasets: register, list, search, show, add a schema version, retire, stats.",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  datapolis dataset register air.schema.json --slug air-quality --title 'Air quality' "
    "--theme environment --licence etalab-2.0 --key-field station_id\n\n"
    "  datapolis dataset search 'qualité air'\n\n"
    "  datapolis dataset schema add air-quality air.v2.schema.json\n\n"
    "  datapolis dataset stats air-quality",
)
schema_app = typer.Typer(
    name="schema",
    help="Schema versions of a dataset.",
    no_args_is_help=True,
    epilog="Example:\n\n  datapolis dataset schema add air-quality air.v2.schema.json --major",
)
app.add_typer(schema_app)

LIST_COLUMNS = ("slug", "title", "theme", "access_level", "publisher", "schema_version", "status")
SHOW_KEYS = (
    "slug", "dataset_id", "title", "description", "publisher", "theme", "keywords", "licence",
    "access_level", "key_field", "subject_field", "schema_version", "topic", "retention_days",
    "partitions", "status", "topics_provisioned", "created_at", "retired_at",
)  # fmt: skip
STATS_KEYS = (
    "records_per_minute", "accepted_last_hour", "rejected_last_hour", "rejection_rate",
    "last_record_at", "updated_at",
)  # fmt: skip


@app.command("register")
def register(
    ctx: typer.Context,
    schema_file: Annotated[
        str,
        typer.Argument(
            help="A JSON Schema (2020-12) file, or a JSON dataset description holding "
            "`json_schema` and any of the options below; `-` reads standard input."
        ),
    ],
    slug: Annotated[str | None, typer.Option(help="The dataset's slug (its name).")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    theme: Annotated[
        str | None,
        typer.Option(help="energy, water, mobility, socio-demographic, environment, ..."),
    ] = None,
    licence: Annotated[str | None, typer.Option(help="etalab-2.0, odbl-1.0, cc-by-4.0, ...")] = (
        None
    ),
    access_level: Annotated[str | None, typer.Option(help="open, shared or personal.")] = None,
    key_field: Annotated[str | None, typer.Option(help="The field records are keyed by.")] = None,
    subject_field: Annotated[
        str | None, typer.Option(help="The data subject's field (personal datasets).")
    ] = None,
    description: Annotated[str | None, typer.Option()] = None,
    keyword: Annotated[list[str] | None, typer.Option("--keyword", "-k", metavar="<word>")] = None,
    retention_days: Annotated[int | None, typer.Option()] = None,
    partitions: Annotated[int | None, typer.Option()] = None,
    publisher: Annotated[
        str | None, typer.Option(help="Publisher's org id (the operator registering for it).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a dataset from a schema file."""
    state = use(ctx, as_json)
    document = read_object(schema_file)
    body: dict[str, Any] = (
        dict(document) if "json_schema" in document else {"json_schema": document}
    )
    options: dict[str, Any] = {
        "slug": slug, "title": title, "theme": theme, "licence": licence,
        "access_level": access_level, "key_field": key_field, "subject_field": subject_field,
        "description": description, "keywords": keyword or None,
        "retention_days": retention_days, "partitions": partitions, "publisher_id": publisher,
    }  # fmt: skip
    body.update({k: v for k, v in options.items() if v is not None})
    body.setdefault("access_level", "open")
    created = state.api("catalog").post("/datasets", json=body)
    output.show(created, as_json=state.json, keys=SHOW_KEYS)


def _listing(state: State, params: dict[str, Any], every: bool, limit: int) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = state.api("catalog").get(
            "/datasets", params={**params, "cursor": cursor, "limit": limit}
        )
        items.extend(page.get("items", []))
        cursor = page.get("next_cursor")
        if not every or not cursor:
            return items


@app.command("list")
def list_(
    ctx: typer.Context,
    theme: Annotated[str | None, typer.Option()] = None,
    access_level: Annotated[str | None, typer.Option(help="open, shared or personal.")] = None,
    publisher: Annotated[str | None, typer.Option(help="The publisher's org id.")] = None,
    keyword: Annotated[str | None, typer.Option()] = None,
    include_retired: Annotated[bool, typer.Option("--include-retired")] = False,
    limit: Annotated[int, typer.Option(help="Datasets per page.")] = 50,
    every: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List datasets, filtered."""
    state = use(ctx, as_json)
    params: dict[str, Any] = {
        "theme": theme, "access_level": access_level, "publisher": publisher,
        "keyword": keyword, "include_retired": "true" if include_retired else None,
    }  # fmt: skip
    output.show(_listing(state, params, every, limit), as_json=state.json, columns=LIST_COLUMNS)


@app.command("search")
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Words of a title, keywords or description.")],
    theme: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    as_json: JsonOption = False,
) -> None:
    """Search datasets (French and English stemming, best match first)."""
    state = use(ctx, as_json)
    found = _listing(state, {"q": query, "theme": theme}, False, limit)
    output.show(found, as_json=state.json, columns=LIST_COLUMNS)


@app.command("show")
def show(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The dataset's slug.")],
    schema: Annotated[bool, typer.Option("--schema", help="Print its JSON Schema too.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a dataset."""
    state = use(ctx, as_json)
    dataset = state.api("catalog").get(f"/datasets/{slug}")
    output.show(dataset, as_json=state.json, keys=SHOW_KEYS)
    if schema and not state.json:
        output.print_json(dataset.get("json_schema"))


@schema_app.command("add")
def schema_add(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The dataset's slug.")],
    schema_file: Annotated[str, typer.Argument(help="The new JSON Schema; `-`: stdin.")],
    major: Annotated[
        bool, typer.Option("--major", help="Accept an incompatible change as a new major version.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a schema version (refused with 409 if incompatible, unless --major)."""
    state = use(ctx, as_json)
    added = state.api("catalog").post(
        f"/datasets/{slug}/schemas", json={"json_schema": read_object(schema_file), "major": major}
    )
    output.show(added, as_json=state.json, keys=("version", "major", "topic_name", "created"))


@schema_app.command("list")
def schema_list(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The dataset's slug.")],
    as_json: JsonOption = False,
) -> None:
    """List a dataset's schema versions."""
    state = use(ctx, as_json)
    versions = state.api("catalog").get(f"/datasets/{slug}/schemas")
    output.show(
        versions, as_json=state.json, columns=("version", "major", "topic_name", "created_at")
    )


@app.command("retire")
def retire(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The dataset's slug.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Retire a dataset: its agreements end and it takes no new records."""
    state = use(ctx, as_json)
    if not yes and not typer.confirm(f"Retire {slug}? Its agreements end.", err=True):
        raise CliError("not retired", exit_code=ExitCode.OTHER)
    retired = state.api("catalog").call("DELETE", f"/datasets/{slug}")
    output.show(retired, as_json=state.json, keys=SHOW_KEYS)


@app.command("stats")
def stats(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The dataset's slug.")],
    as_json: JsonOption = False,
) -> None:
    """Live stats: records per minute, last hour's counts, rejection rate."""
    state = use(ctx, as_json)
    dataset = state.api("catalog").get(f"/datasets/{slug}")
    figures = dataset.get("stats")
    if state.json:
        output.print_json({"slug": slug, "stats": figures})
    elif figures is None:
        output.note(f"No stats for {slug} yet (the catalog worker writes them every 5 s).")
    else:
        output.show(figures, as_json=False, keys=STATS_KEYS)
