"""Reading the JSON documents commands take (schemas, receipts, JWKS)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from datapolis_cli.errors import CliError, ExitCode


def read_text(source: str) -> str:
    """A file's text, or standard input for ``-``."""
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(
            f"cannot read {source}", exit_code=ExitCode.INVALID, detail=exc.strerror
        ) from None


def read_json(source: str) -> Any:
    text = read_text(source)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(
            f"{source} is not JSON", exit_code=ExitCode.INVALID, detail=str(exc)
        ) from None


def read_object(source: str) -> dict[str, Any]:
    document = read_json(source)
    if not isinstance(document, dict):
        raise CliError(f"{source} is not a JSON object", exit_code=ExitCode.INVALID)
    return document
