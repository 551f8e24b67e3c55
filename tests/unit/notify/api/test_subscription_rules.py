"""Pure rules of subscriptions: topic names, webhook URL syntax, keys, cursors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from datapolis_notify.subscriptions import (
    InvalidCursor,
    InvalidWebhookUrl,
    check_webhook_url,
    decode_cursor,
    delivery_topic,
    encode_cursor,
    generate_key,
)
from datapolis_notify.webhooks.targets import TargetPolicy


def test_the_kafka_topic_is_deliver_consumer_slug_with_only_legal_characters() -> None:
    assert delivery_topic("org-1a2b", "meters") == "deliver.org-1a2b.meters"
    assert delivery_topic("org 1/é", "a.b") == "deliver.org_1__.a_b"
    assert len(delivery_topic("o" * 300, "s")) <= 249


@pytest.mark.parametrize(
    "url",
    [
        "ftp://partner.example/hook",
        "https://user:secret@partner.example/hook",
        "https:///no-host",
        "https://partner.example:99999/hook",
        "https://partner example/hook",
        "javascript:alert(1)",
    ],
)
def test_urls_that_cannot_be_webhook_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_webhook_url(url, TargetPolicy())


def test_private_targets_are_refused_with_their_reason_unless_allowed() -> None:
    with pytest.raises(InvalidWebhookUrl) as refused:
        check_webhook_url("https://10.1.2.3/hook", TargetPolicy())
    assert refused.value.extra["reason"] == "private"
    check_webhook_url("http://10.1.2.3/hook", TargetPolicy.from_entries(["10.0.0.0/8"]))


def test_a_plain_https_url_is_accepted() -> None:
    check_webhook_url("https://partner.example:8443/hooks/datapolis?tenant=1", TargetPolicy())


def test_v1_keys_are_32_random_bytes_that_sign_hmac_sha256() -> None:
    key = generate_key("v1")
    raw = base64.b64decode(key.secret.removeprefix("whsec_"))
    assert len(raw) == 32
    assert key.public_key is None
    assert generate_key("v1").secret != key.secret
    assert hmac.new(raw, b"msg.1.{}", hashlib.sha256).digest()
    assert key.shown().secret == key.secret


def test_v1a_keys_are_an_ed25519_pair_and_only_the_public_half_is_shown() -> None:
    key = generate_key("v1a")
    assert key.public_key is not None
    private = Ed25519PrivateKey.from_private_bytes(
        base64.b64decode(key.secret.removeprefix("whsk_"))
    )
    public = private.public_key().public_bytes_raw()
    assert key.public_key == "whpk_" + base64.b64encode(public).decode()
    shown = key.shown()
    assert shown.secret is None
    assert shown.public_key == key.public_key


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    assert decode_cursor(encode_cursor("2026-01-01T00:00:00+00:00", "id-1"), 2) == [
        "2026-01-01T00:00:00+00:00",
        "id-1",
    ]
    for foreign in ("x", encode_cursor("a"), encode_cursor({"a": 1}, 2), encode_cursor("a\x00", 1)):
        with pytest.raises(InvalidCursor):
            decode_cursor(foreign, 2)
