"""API keys: format, hashing, scopes."""

from __future__ import annotations

import pytest

from datapolis_shared.auth import (
    KEY_PREFIX,
    OPERATOR_ORG,
    SCOPES,
    FailedAuthThrottle,
    Principal,
    client_key,
    generate_key,
    hash_key,
    parse_key_id,
)
from datapolis_shared.errors import Forbidden, Throttled
from datapolis_shared.settings import AuthSettings


def test_keys_are_random_prefixed_and_parse_back() -> None:
    first, second = generate_key(), generate_key()
    assert first.token.startswith(KEY_PREFIX)
    assert first.token != second.token
    assert parse_key_id(first.token) == first.key_id
    assert len(first.token) > 50


def test_only_the_hash_is_kept_and_it_is_stable() -> None:
    key = generate_key()
    assert key.secret_hash == hash_key(key.token)
    assert key.token not in key.secret_hash


@pytest.mark.parametrize("token", ["", "dpk_", "dpk_abc", "Bearer dpk_x_y", "sk_abc_def"])
def test_malformed_keys_have_no_id(token: str) -> None:
    assert parse_key_id(token) is None


def test_scopes_are_enforced_except_for_the_operator() -> None:
    producer = Principal("org-1", "k1", frozenset({"ingest"}))
    producer.require("ingest")
    with pytest.raises(Forbidden) as info:
        producer.require("publish")
    assert info.value.code == "missing-scope"
    operator = Principal(OPERATOR_ORG, "operator", SCOPES)
    operator.require("publish")
    with pytest.raises(Forbidden):
        producer.require_operator()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(clock: _Clock, settings: AuthSettings) -> FailedAuthThrottle:
    return FailedAuthThrottle(settings, clock=clock)


def test_a_client_over_its_failures_is_refused_until_its_bucket_refills() -> None:
    clock = _Clock()
    throttle = _throttle(clock, AuthSettings(max_failures=3, failure_interval_s=10))
    for _ in range(3):
        throttle.check("198.51.100.7")
        throttle.failed("198.51.100.7")
    with pytest.raises(Throttled) as refused:
        throttle.check("198.51.100.7")
    assert refused.value.code == "too-many-failed-authentications"
    assert refused.value.retry_after_s == 10
    throttle.check("198.51.100.8")  # another client is not affected
    clock.now += 4
    with pytest.raises(Throttled) as still:
        throttle.check("198.51.100.7")
    assert still.value.retry_after_s == 6
    clock.now += 6  # one more attempt per interval
    throttle.check("198.51.100.7")
    throttle.failed("198.51.100.7")
    with pytest.raises(Throttled):
        throttle.check("198.51.100.7")
    clock.now += 30  # refilled: forgotten
    throttle.check("198.51.100.7")
    assert len(throttle) == 0


def test_the_throttle_remembers_a_bounded_number_of_clients() -> None:
    clock = _Clock()
    throttle = _throttle(
        clock, AuthSettings(max_failures=1, failure_interval_s=60, tracked_clients=100)
    )
    for n in range(1000):
        throttle.failed(f"client-{n}")
    assert len(throttle) == 100
    with pytest.raises(Throttled):
        throttle.check("client-999")
    throttle.check("client-0")  # the least recently failed were forgotten


def test_failures_count_per_address_and_per_ipv6_64() -> None:
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_key(None) == "unknown"
