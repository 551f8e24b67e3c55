"""``datapolis login``: store a profile."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from datapolis_cli import output
from datapolis_cli.client import Api
from datapolis_cli.config import config_path, load_profile, save_profile
from datapolis_cli.context import use

EPILOG = (
    "Examples:\n\n"
    "  datapolis login --api-key dpk_...\n\n"
    "  datapolis --profile prod login --catalog-url https://catalog.city.example "
    "--api-key dpk_...\n\n"
    "  datapolis login --subject-token eyJ... --no-check"
)


def login(
    ctx: typer.Context,
    api_key: Annotated[
        str | None, typer.Option(help="The organisation's API key (dpk_...).")
    ] = None,
    subject_token: Annotated[
        str | None, typer.Option(help="A data subject's token (a JWT), for `consent`.")
    ] = None,
    catalog_url: Annotated[str | None, typer.Option(help="Catalog's base URL.")] = None,
    ingest_url: Annotated[str | None, typer.Option(help="Ingest's base URL.")] = None,
    consent_url: Annotated[str | None, typer.Option(help="Consent's base URL.")] = None,
    notify_url: Annotated[str | None, typer.Option(help="Notify's base URL.")] = None,
    kafka_bootstrap_servers: Annotated[
        str | None, typer.Option(help="Kafka's bootstrap servers, for `tail --kafka`.")
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Check the API key against catalog before saving.")
    ] = True,
    default: Annotated[
        bool, typer.Option("--default", help="Make this profile the default one.")
    ] = False,
) -> None:
    """Store a profile (URLs and credentials) in the config file.

    Values not given are kept from the profile as stored (or the local
    defaults). The file is readable by its owner only.
    """
    state = use(ctx)
    current = load_profile(state.profile_name)
    given = {
        "api_key": api_key,
        "subject_token": subject_token,
        "catalog_url": catalog_url,
        "ingest_url": ingest_url,
        "consent_url": consent_url,
        "notify_url": notify_url,
        "kafka_bootstrap_servers": kafka_bootstrap_servers,
    }
    profile = replace(current, **{k: v for k, v in given.items() if v is not None})
    if check and profile.api_key:
        # Any valid key may list organisations: a 401 means the key is wrong.
        Api(profile, "catalog").get("/organisations")
    path = save_profile(profile, make_default=default)
    if state.json:
        output.print_json({"profile": profile.name, "path": str(path)})
    else:
        output.note(f"Profile [bold]{profile.name}[/] saved in {path}")


__all__ = ["EPILOG", "config_path", "login"]
