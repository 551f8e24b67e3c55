"""The consumer loop's retry bound and backoff (pure arithmetic)."""

from __future__ import annotations

from datapolis_shared.kafka import RetryPolicy
from datapolis_shared.retry import Backoff
from datapolis_shared.settings import KafkaSettings


def test_the_bound_is_whichever_limit_comes_first() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed_s=10)
    assert not policy.exhausted(2, 9.9)
    assert policy.exhausted(3, 0.5)
    assert policy.exhausted(1, 10.0)


def test_the_delay_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = RetryPolicy(backoff=Backoff(initial_s=0.2, max_s=1.0, jitter_s=0.1)).backoff
    for attempt, floor in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (30, 1.0), (500, 1.0)]:
        delays = {backoff.delay_s(attempt) for _ in range(200)}
        assert all(floor <= d <= min(1.0, floor + 0.1) for d in delays)
        if floor < 1.0:
            assert len(delays) > 1  # jittered: replicas do not retry in step


def test_the_default_bound_comes_from_the_settings() -> None:
    settings = KafkaSettings(consumer_retry_attempts=4, consumer_retry_max_s=7.5)
    policy = RetryPolicy.from_settings(settings)
    assert (policy.max_attempts, policy.max_elapsed_s) == (4, 7.5)
