"""Webhooks: Standard Webhooks signatures, the target guard, the HTTP sender
and the retry schedule. Knows nothing of Kafka, PostgreSQL or the API."""

from datapolis_notify.webhooks.config import WebhookSettings
from datapolis_notify.webhooks.schedule import MAX_ATTEMPTS, RETRY_DELAYS_S, next_delay
from datapolis_notify.webhooks.sender import HttpWebhookSender, parse_retry_after
from datapolis_notify.webhooks.signing import (
    InvalidSigningKey,
    new_v1_secret,
    new_v1a_key_pair,
    public_key_of,
    signature_headers,
)
from datapolis_notify.webhooks.targets import (
    TargetPolicy,
    TargetRefused,
    check_url,
    classify_address,
)

__all__ = [
    "MAX_ATTEMPTS",
    "RETRY_DELAYS_S",
    "HttpWebhookSender",
    "InvalidSigningKey",
    "TargetPolicy",
    "TargetRefused",
    "WebhookSettings",
    "check_url",
    "classify_address",
    "new_v1_secret",
    "new_v1a_key_pair",
    "next_delay",
    "parse_retry_after",
    "public_key_of",
    "signature_headers",
]
