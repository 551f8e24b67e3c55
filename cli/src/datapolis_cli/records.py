"""Records read from JSON, NDJSON or CSV, cut into NDJSON batches."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from datapolis_cli.errors import CliError, ExitCode

Format = Literal["json", "ndjson", "csv"]


@dataclass(frozen=True)
class Batch:
    index: int
    first: int  # position of its first record in the input, from 0
    lines: list[bytes]

    @property
    def body(self) -> bytes:
        return b"\n".join(self.lines) + b"\n"

    def idempotency_key(self, slug: str, prefix: str | None) -> str:
        """Same input, same batch, same key: running the same push again after
        an interruption replays the batches ingest already took."""
        digest = hashlib.sha256(slug.encode() + b"\0" + self.body).hexdigest()[:32]
        return f"{prefix or 'push'}-{self.index}-{digest}"


def guess_format(name: str) -> Format | None:
    lower = name.lower()
    if lower.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".json"):
        return "json"
    return None


def _scalar(value: str, kind: Any) -> Any:
    """A CSV cell as the JSON type the schema gives its column."""
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if value == "" and "null" in kinds:
        return None
    try:
        if "integer" in kinds and value.lstrip("-").isdigit():
            return int(value)
        if "number" in kinds:
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
    except ValueError:
        return value
    if "boolean" in kinds and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _nest(row: Mapping[str, str], types: Mapping[str, Any]) -> dict[str, Any]:
    """``a.b`` columns become nested objects; empty cells are left out."""
    record: dict[str, Any] = {}
    for column, value in row.items():
        if value is None or value == "":
            continue
        target = record
        parts = column.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = _scalar(value, types.get(column))
    return record


def column_types(json_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Dotted property paths of a schema and their ``type``."""
    found: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for name, sub in (node.get("properties") or {}).items():
            if isinstance(sub, Mapping):
                if "type" in sub:
                    found[prefix + name] = sub["type"]
                walk(sub, prefix + name + ".")

    if json_schema:
        walk(json_schema, "")
    return found


def read_lines(stream: TextIO, fmt: Format, types: Mapping[str, Any]) -> Iterator[bytes]:
    """Each record as one NDJSON line. NDJSON lines go as they are (ingest
    rejects a malformed one on its own, with its line number)."""
    if fmt == "ndjson":
        for line in stream:
            stripped = line.strip()
            if stripped:
                yield stripped.encode()
    elif fmt == "csv":
        for row in csv.DictReader(stream):
            yield json.dumps(_nest(row, types), ensure_ascii=False).encode()
    else:
        try:
            document = json.load(stream)
        except ValueError as exc:
            raise CliError(
                "the input is not JSON", exit_code=ExitCode.INVALID, detail=str(exc)
            ) from None
        records = document if isinstance(document, list) else [document]
        for item in records:
            yield json.dumps(item, ensure_ascii=False).encode()


def batches(lines: Iterable[bytes], size: int) -> Iterator[Batch]:
    current: list[bytes] = []
    index = first = 0
    for position, line in enumerate(lines):
        if not current:
            first = position
        current.append(line)
        if len(current) >= size:
            yield Batch(index, first, current)
            index += 1
            current = []
    if current:
        yield Batch(index, first, current)


def count_records(text: str, fmt: Format) -> int | None:
    """How many records a file holds, for the progress bar (None: unknown)."""
    if fmt == "ndjson":
        return sum(1 for line in io.StringIO(text) if line.strip())
    if fmt == "csv":
        return max(sum(1 for _ in csv.reader(io.StringIO(text))) - 1, 0)
    return None
