"""Settings of the ingest service: environment variables prefixed `INGEST_`."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from datapolis_shared.settings import HttpSettings, ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="INGEST_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "ingest"
    http: HttpSettings = HttpSettings(port=8002)
