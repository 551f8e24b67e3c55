"""What every command gets: the profile chosen, the output mode, its APIs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from datapolis_cli.client import Api, Service
from datapolis_cli.config import Profile, load_profile
from datapolis_cli.errors import CliError, ExitCode

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]


@dataclass
class State:
    profile_name: str | None = None
    json: bool = False

    def profile(self) -> Profile:
        return load_profile(self.profile_name)

    def api(self, service: Service) -> Api:
        return Api(self.profile(), service)


def use(ctx: typer.Context, as_json: bool = False) -> State:
    """The state the main callback set, with a command's own ``--json``."""
    found = ctx.find_object(State)
    state = found if found is not None else State()
    if as_json:
        state.json = True
    return state


def key_values(pairs: list[str] | None, option: str) -> dict[str, str]:
    """``k=v`` options as a mapping (a filter, for instance)."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(
                f"{option} takes FIELD=VALUE", exit_code=ExitCode.USAGE, detail=f"got {pair!r}"
            )
        result[key] = value
    return result
