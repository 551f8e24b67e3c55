"""Settings of the consent service: environment variables prefixed `CONSENT_`."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from datapolis_shared.events.base import CATALOG_EVENTS
from datapolis_shared.settings import HttpSettings, ServiceSettings


class ConsentSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONSENT_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "consent"
    http: HttpSettings = HttpSettings(port=8003)
    # Where consent learns about datasets: catalog's events topic.
    catalog_events_topic: str = CATALOG_EVENTS
