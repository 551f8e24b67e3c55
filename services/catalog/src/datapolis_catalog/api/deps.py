"""What the routes get injected: the catalog's wiring and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from datapolis_catalog.datasets import Links
from datapolis_catalog.provisioning import Provisioner
from datapolis_catalog.settings import CatalogSettings
from datapolis_shared.errors import Unavailable
from datapolis_shared.postgres.pool import Pool


@dataclass
class Catalog:
    """Built once connected (see ``app.on_connected``)."""

    settings: CatalogSettings
    pool: Pool
    provisioner: Provisioner
    links: Links


async def get_catalog(request: Request) -> Catalog:
    catalog: Catalog | None = getattr(request.app.state, "catalog", None)
    if catalog is None:
        raise Unavailable("the catalog is still connecting to its dependencies", retry_after_s=2)
    return catalog


async def base_url(request: Request) -> str:
    settings: CatalogSettings = request.app.state.settings
    return (settings.http.public_url or str(request.base_url)).rstrip("/")


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
Slug = Annotated[str, Path(description="the dataset's slug", examples=["energy-meters"])]
BaseUrl = Annotated[str, Depends(base_url)]
