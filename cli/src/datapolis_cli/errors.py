"""Exit codes, and the one error every command raises to stop with one."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    OTHER = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    CONFLICT = 5
    INVALID = 6
    UNAVAILABLE = 7


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 other error; 2 usage error; 3 authentication or permission "
    "(401/403); 4 not found (404); 5 conflict (409); 6 invalid input (400/413/415/422, or "
    "records rejected by push); 7 service unavailable (503, 429, connection refused)."
)


def exit_code_for_status(status: int) -> ExitCode:
    """What an HTTP status means to a script calling the command line."""
    if status in (401, 403):
        return ExitCode.AUTH
    if status == 404:
        return ExitCode.NOT_FOUND
    if status == 409:
        return ExitCode.CONFLICT
    if status in (400, 413, 415, 422):
        return ExitCode.INVALID
    if status in (429, 502, 503, 504):
        return ExitCode.UNAVAILABLE
    return ExitCode.OTHER


class CliError(Exception):
    """Stops the command with ``exit_code``; shown as title, detail and code."""

    def __init__(
        self,
        title: str,
        *,
        exit_code: ExitCode = ExitCode.OTHER,
        detail: str | None = None,
        code: str | None = None,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(title)
        self.title = title
        self.exit_code = exit_code
        self.detail = detail
        self.code = code
        self.status = status
        self.problem = problem or {}
