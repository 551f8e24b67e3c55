"""Settings of the consent service: environment variables prefixed `CONSENT_`."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from datapolis_shared.settings import HttpSettings, ServiceSettings


class ConsentSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONSENT_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "consent"
    http: HttpSettings = HttpSettings(port=8003)
