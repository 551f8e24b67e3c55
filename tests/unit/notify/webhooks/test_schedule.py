"""The retry schedule: at least a day of attempts, jittered, Retry-After
honoured as a lower bound."""

from __future__ import annotations

import random

import pytest

from datapolis_notify.webhooks.schedule import MAX_ATTEMPTS, RETRY_DELAYS_S, next_delay

DAY_S = 24 * 3600


class _Extreme(random.Random):
    """Every jitter at one end of its range."""

    def __init__(self, end: float) -> None:
        super().__init__()
        self._end = end

    def uniform(self, a: float, b: float) -> float:
        return a if self._end < 0 else b


def _total(rng: random.Random) -> float:
    total, attempt = 0.0, 1
    while (delay := next_delay(attempt, None, rng)) is not None:
        total += delay
        attempt += 1
    assert attempt == MAX_ATTEMPTS
    return total


def test_the_documented_schedule() -> None:
    assert RETRY_DELAYS_S == (5, 300, 1800, 7200, 18000, 36000, 50400)
    assert MAX_ATTEMPTS == 8


def test_attempts_span_at_least_a_day_even_with_every_jitter_low() -> None:
    assert _total(_Extreme(-1)) >= DAY_S
    assert _total(_Extreme(+1)) <= 1.2 * sum(RETRY_DELAYS_S)


def test_jitter_stays_within_twenty_percent_and_spreads() -> None:
    rng = random.Random(7)
    delays = [next_delay(3, None, rng) for _ in range(200)]
    assert all(d is not None and 1440 <= d <= 2160 for d in delays)
    assert len({round(d or 0) for d in delays}) > 50


def test_after_the_last_attempt_the_delivery_is_dead() -> None:
    assert next_delay(MAX_ATTEMPTS, None, random.Random(1)) is None
    assert next_delay(MAX_ATTEMPTS + 5, 10.0, random.Random(1)) is None


def test_retry_after_is_a_lower_bound() -> None:
    rng = random.Random(3)
    assert next_delay(1, 120.0, rng) == 120.0
    later = next_delay(4, 60.0, rng)
    assert later is not None
    assert later >= 0.8 * 7200


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        next_delay(0, None, random.Random())
