"""``datapolis push``: records from a file or standard input, in batches."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TextIO, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from datapolis_cli import output
from datapolis_cli.client import Api, problem_error
from datapolis_cli.context import JsonOption, use
from datapolis_cli.errors import CliError, ExitCode
from datapolis_cli.records import (
    Batch,
    Format,
    batches,
    column_types,
    count_records,
    guess_format,
    read_lines,
)

EPILOG = (
    "Each batch carries an Idempotency-Key derived from its content: if a push is "
    "interrupted, run the same command again; ingest replays the batches it already "
    "took (for 24 h) instead of writing them twice. Records ingest rejects are written, "
    "with their errors, to the --rejected file (NDJSON) and the command exits 6.\n\n"
    "Examples:\n\n"
    "  datapolis push air-quality readings.ndjson\n\n"
    "  datapolis push bike-stations stations.csv --batch-size 1000 --rejected bad.ndjson\n\n"
    "  producer | datapolis push air-quality - --format ndjson"
)

# Answers worth retrying with the same Idempotency-Key: the service asks to
# come back (not known yet, overloaded, Kafka slow) or the key's first
# request is still being answered.
RETRYABLE = {429, 502, 503, 504}
IN_PROGRESS = "idempotency-key-in-progress"


def _send(
    api: Api, slug: str, batch: Batch, key: str | None, version: int | None, retry_for_s: float
) -> tuple[dict[str, Any], bool]:
    headers = {"Content-Type": "application/x-ndjson"}
    if key:
        headers["Idempotency-Key"] = key
    if version is not None:
        headers["Datapolis-Schema-Version"] = str(version)
    deadline = time.monotonic() + retry_for_s
    while True:
        response = api.send(
            "POST", f"/datasets/{slug}/records", content=batch.body, headers=headers
        )
        if response.status_code == 200:
            replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
            answer: dict[str, Any] = response.json()
            return answer, replayed
        error = problem_error(response, "ingest")
        retry = response.status_code in RETRYABLE or error.code == IN_PROGRESS
        if not retry or time.monotonic() >= deadline:
            error.detail = f"batch {batch.index} (records {batch.first}+): {error.detail or ''}"
            raise error
        try:
            wait = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        time.sleep(min(max(wait, 0.2), max(deadline - time.monotonic(), 0.2)))


def _input(source: str) -> tuple[TextIO, str | None]:
    if source == "-":
        return sys.stdin, None
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(
            f"cannot read {source}", exit_code=ExitCode.INVALID, detail=exc.strerror
        ) from None
    return io.StringIO(text), text


def push(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The dataset's slug.")],
    source: Annotated[str, typer.Argument(help="A JSON, NDJSON or CSV file; `-`: stdin.")] = "-",
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="json, ndjson or csv (default: the file's extension)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=5000, help="Records per request (ingest takes 5,000).")
    ] = 500,
    rejected: Annotated[
        Path | None,
        typer.Option(help="Where rejected records go (NDJSON). Default: <source>.rejected.ndjson"),
    ] = None,
    idempotency_prefix: Annotated[
        str | None,
        typer.Option(help="Prefix of the batches' Idempotency-Keys (default: push)."),
    ] = None,
    no_idempotency: Annotated[
        bool, typer.Option("--no-idempotency", help="Send no Idempotency-Key.")
    ] = False,
    schema_version: Annotated[
        int | None, typer.Option(help="The schema version the records follow.")
    ] = None,
    retry_for: Annotated[
        float, typer.Option(help="Seconds to keep retrying a batch the service asks to retry.")
    ] = 30.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Push records to a dataset, in batches, with a progress bar."""
    state = use(ctx, as_json)
    chosen = fmt or guess_format(source) or "ndjson"
    if chosen not in ("json", "ndjson", "csv"):
        raise CliError("--format is json, ndjson or csv", exit_code=ExitCode.USAGE)
    form = cast(Format, chosen)
    profile = state.profile()
    api = Api(profile, "ingest")
    types: dict[str, Any] = {}
    if form == "csv":
        # CSV cells are text: the dataset's schema says which are numbers.
        detail = Api(profile, "catalog").get(f"/datasets/{slug}")
        types = column_types(detail.get("json_schema"))
    stream, text = _input(source)
    total = count_records(text, form) if text is not None else None
    rejected_path = rejected or Path((source if source != "-" else "stdin") + ".rejected.ndjson")
    summary: dict[str, Any] = {
        "accepted": 0,
        "duplicates": 0,
        "rejected": 0,
        "batches": 0,
        "replayed": 0,
    }
    rejected_file: TextIO | None = None
    bar = Progress(
        TextColumn(f"[bold]{slug}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=output.err, disable=not progress or state.json or not output.err.is_terminal,
    )  # fmt: skip
    try:
        with bar:
            task = bar.add_task("push", total=total)
            for batch in batches(read_lines(stream, form, types), batch_size):
                key = None if no_idempotency else batch.idempotency_key(slug, idempotency_prefix)
                answer, replayed = _send(api, slug, batch, key, schema_version, retry_for)
                summary["batches"] += 1
                summary["replayed"] += int(replayed)
                summary["accepted"] += int(answer.get("accepted", 0))
                summary["duplicates"] += int(answer.get("duplicates", 0))
                for entry in answer.get("rejected", []):
                    summary["rejected"] += 1
                    if rejected_file is None:
                        rejected_file = rejected_path.open("w", encoding="utf-8")
                    index = int(entry.get("index", 0))
                    line = batch.lines[index] if 0 <= index < len(batch.lines) else b""
                    rejected_file.write(
                        json.dumps(
                            {
                                "position": batch.first + index,
                                "batch": batch.index,
                                "code": entry.get("code"),
                                "errors": entry.get("errors", []),
                                "record": line.decode("utf-8", "replace"),
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
                bar.advance(task, len(batch.lines))
    finally:
        if rejected_file is not None:
            rejected_file.close()
    if summary["rejected"]:
        summary["rejected_file"] = str(rejected_path)
    if state.json:
        output.print_json(summary)
    else:
        output.record(summary)
    if summary["rejected"]:
        raise CliError(
            f"{summary['rejected']} records rejected",
            exit_code=ExitCode.INVALID,
            detail=f"they are in {rejected_path}, with their errors",
            code="records-rejected",
        )
