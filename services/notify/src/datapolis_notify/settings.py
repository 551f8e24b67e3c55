"""Settings of the notify service: environment variables prefixed `NOTIFY_`."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_shared.settings import HttpSettings, ServiceSettings


class SseSettings(BaseModel):
    """Server-sent event streams (`NOTIFY_SSE__...`)."""

    # A comment line this often keeps proxies from closing an idle stream.
    heartbeat_s: float = Field(default=15.0, gt=0)
    # Open streams per organisation, per notify process: beyond, 429.
    max_streams_per_org: int = Field(default=10, ge=1)
    # How often an idle stream re-checks its entitlement besides being told
    # of each change: well under the 1 s within which it must close.
    recheck_interval_s: float = Field(default=0.2, gt=0, le=0.5)


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFY_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "notify"
    http: HttpSettings = HttpSettings(port=8004)
    webhooks: WebhookSettings = WebhookSettings()
    sse: SseSettings = SseSettings()
    entitlements: EntitlementSettings = EntitlementSettings()
