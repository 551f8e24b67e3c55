"""Settings of the catalog service: environment variables prefixed `CATALOG_`."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from datapolis_shared.settings import HttpSettings, ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CATALOG_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "catalog"
    http: HttpSettings = HttpSettings(port=8001)
