"""Settings of notify's entitlement view (``NOTIFY_ENTITLEMENTS__...``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from datapolis_shared.events.base import CATALOG_EVENTS, CONSENT_EVENTS


class EntitlementSettings(BaseModel):
    """``staleness_s``: how long after it last caught up with Kafka a view
    still decides shared and personal deliveries. It bounds how late a
    revocation can take effect, so it stays well under the 1 s bound (the
    rest is one probe interval and the decision itself).
    ``poll_interval_s``: how often a view asks Kafka for the topics' ends to
    prove it caught up. ``fetch_max_wait_ms``: how long the broker may hold a
    fetch for new records (a revoke is applied within about that)."""

    staleness_s: float = Field(default=0.5, gt=0, le=0.8)
    poll_interval_s: float = Field(default=0.1, gt=0, le=0.25)
    fetch_max_wait_ms: int = Field(default=50, ge=1, le=250)
    catalog_events_topic: str = CATALOG_EVENTS
    consent_events_topic: str = CONSENT_EVENTS

    @property
    def topics(self) -> tuple[str, str]:
        return (self.catalog_events_topic, self.consent_events_topic)
