"""Settings of webhook sending: ``NOTIFY_WEBHOOKS__*``."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from datapolis_notify.webhooks.targets import parse_allow_entry


class WebhookSettings(BaseModel):
    # The whole attempt: connect, send, and the response's status and headers.
    timeout_s: float = Field(default=15.0, gt=0, le=120)
    # CIDRs or host names opened despite the target guard (local development,
    # tests), e.g. '["127.0.0.0/8"]'. Metadata addresses stay refused.
    allow_targets: list[str] = Field(default_factory=list)
    # Redirects followed per attempt (307 and 308 only: they keep the POST and
    # its body), each hop vetted like the first. 0: a 3xx is a failure, as the
    # Standard Webhooks spec recommends.
    max_redirects: int = Field(default=0, ge=0, le=5)
    # One pool for every endpoint; each host gets at most its share, so a
    # dead endpoint cannot hold every connection.
    max_connections: int = Field(default=512, ge=1)
    max_connections_per_host: int = Field(default=16, ge=1)
    keepalive_expiry_s: float = Field(default=30.0, ge=0)
    # Retry-After beyond this is cut to it.
    max_retry_after_s: float = Field(default=3600.0, ge=0)
    # Bytes of a response's body read (for the delivery log's error text).
    max_response_bytes: int = Field(default=4096, ge=0, le=65536)

    @field_validator("allow_targets")
    @classmethod
    def _entries_parse(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_allow_entry(entry)
        return value
