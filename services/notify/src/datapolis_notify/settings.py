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


class DeliverySettings(BaseModel):
    """The delivery worker (``NOTIFY_DELIVERY__*``)."""

    # The dataset topics it reads, and its consumer group (named as every
    # service's groups are, datapolis-<service>-<consumer>: the KafkaUser's
    # ACL and the consumer-lag alert cover it).
    topic_pattern: str = r"^data\..*"
    group_id: str = "datapolis-notify-delivery"
    # Seconds before each retry after a failed attempt (the first attempt is
    # immediate); a message whose last retry fails is dead. None: the webhook
    # schedule (``webhooks.schedule``, over a day); a list: this one, with up
    # to ``retry_jitter`` of each delay added (development, tests).
    retry_schedule_s: list[float] | None = None
    retry_jitter: float = Field(default=0.1, ge=0, le=1)
    # An endpoint whose every attempt failed for this long is disabled.
    disable_after_s: float = Field(default=24 * 3600.0, gt=0)
    # Messages in flight at once per endpoint (each with keys of its own).
    max_in_flight_per_endpoint: int = Field(default=8, ge=1, le=256)
    # Records an endpoint may hold in memory (batching, or waiting behind
    # their key); beyond, its records go through the durable queue.
    max_held_per_endpoint: int = Field(default=5_000, ge=1)
    # How often the durable queue is polled for due messages, and how long
    # a claimed message is leased to one replica (longer than a send's timeout).
    queue_poll_s: float = Field(default=0.25, gt=0)
    queue_claim_limit: int = Field(default=100, ge=1)
    queue_lease_s: float = Field(default=60.0, gt=0)
    # A new or changed subscription is picked up within this.
    subscription_refresh_s: float = Field(default=1.0, gt=0)
    # Offsets are committed, and the delivery log written, this often.
    commit_interval_s: float = Field(default=0.5, gt=0)
    log_flush_s: float = Field(default=0.05, gt=0)
    # While the entitlement view is not current, records of non-open datasets
    # wait: checked again this often.
    view_wait_s: float = Field(default=0.2, gt=0)


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFY_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "notify"
    http: HttpSettings = HttpSettings(port=8004)
    webhooks: WebhookSettings = WebhookSettings()
    sse: SseSettings = SseSettings()
    entitlements: EntitlementSettings = EntitlementSettings()
    delivery: DeliverySettings = DeliverySettings()
