"""The webhook settings from the environment, and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from datapolis_notify.settings import NotifySettings
from datapolis_notify.webhooks.sender import parse_retry_after

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_allow_list_and_timeout_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_DEV", "true")
    monkeypatch.setenv("NOTIFY_WEBHOOKS__ALLOW_TARGETS", '["127.0.0.0/8", "localhost"]')
    monkeypatch.setenv("NOTIFY_WEBHOOKS__TIMEOUT_S", "2.5")
    webhooks = NotifySettings().webhooks
    assert webhooks.allow_targets == ["127.0.0.0/8", "localhost"]
    assert webhooks.timeout_s == 2.5


def test_defaults_open_nothing_and_wait_15_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_DEV", "true")
    monkeypatch.delenv("NOTIFY_WEBHOOKS__ALLOW_TARGETS", raising=False)
    webhooks = NotifySettings().webhooks
    assert webhooks.allow_targets == []
    assert webhooks.timeout_s == 15
    assert webhooks.max_redirects == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("0", 0.0),
        ("42", 42.0),
        (" 42 ", 42.0),
        ("999999", 3600.0),
        ("Sun, 01 Mar 2026 12:05:00 GMT", 300.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # in the past: now
        ("-5", None),
        ("1.5", None),
        ("tomorrow", None),
        ("", None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW, 3600.0) == expected
