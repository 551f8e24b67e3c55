"""Settings of the notify service: environment variables prefixed `NOTIFY_`."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_shared.settings import HttpSettings, ServiceSettings


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFY_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "notify"
    http: HttpSettings = HttpSettings(port=8004)
    webhooks: WebhookSettings = WebhookSettings()
    entitlements: EntitlementSettings = EntitlementSettings()
