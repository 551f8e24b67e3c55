"""What commands print: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from datapolis_cli.errors import CliError

# Results on stdout, everything else (progress, errors, notes) on stderr, so
# `--json` output can be piped as it is.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        if set(value) <= {"org_id", "name"} and "name" in value:
            return str(value["name"])
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, title: str | None = None
) -> None:
    grid = Table(title=title, show_lines=False)
    for column in columns:
        grid.add_column(column.replace("_", " "))
    count = 0
    for row in rows:
        grid.add_row(*(escape(cell(row.get(column))) for column in columns))
        count += 1
    if count == 0:
        err.print("(none)")
        return
    out.print(grid)


def record(data: Mapping[str, Any], keys: Sequence[str] | None = None) -> None:
    """One object as a two-column table of its fields."""
    grid = Table(show_header=False, box=None)
    grid.add_column(style="bold")
    grid.add_column()
    for key in keys or list(data):
        if key in data:
            grid.add_row(key.replace("_", " "), escape(cell(data[key])))
    out.print(grid)


def show(
    data: Any,
    *,
    as_json: bool,
    columns: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    if as_json:
        print_json(data)
    elif isinstance(data, list):
        table(data, columns or (list(data[0]) if data else []), title=title)
    elif isinstance(data, dict):
        record(data, keys)
    else:
        out.print(escape(str(data)))


def note(message: str) -> None:
    err.print(message)


def error(exc: CliError) -> None:
    err.print(f"[bold red]Error:[/] {escape(exc.title)}")
    if exc.detail:
        err.print(f"  {escape(exc.detail)}")
    if exc.code:
        err.print(f"  code: {escape(exc.code)}")
    problem_errors = exc.problem.get("errors")
    if isinstance(problem_errors, list):
        for item in problem_errors[:20]:
            if isinstance(item, dict):
                where = item.get("path") or item.get("loc") or ""
                what = item.get("message") or item.get("msg") or item
                err.print(f"  - {escape(cell(where))}: {escape(cell(what))}")
    for extra in ("fields", "changes", "purposes", "agreement_status", "reason"):
        if extra in exc.problem and exc.problem[extra] is not None:
            err.print(f"  {extra}: {escape(cell(exc.problem[extra]))}")
