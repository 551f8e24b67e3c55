"""When a failed webhook delivery is tried again.

Eight attempts in all: immediately, then after 5 s, 5 min, 30 min, 2 h, 5 h,
10 h and 14 h (the Standard Webhooks example schedule up to its eighth
attempt; Svix's without its second 10 h). Each wait is spread by +/-20 %
jitter so endpoints that failed together are not retried together. The
waits add up to 31 h 35 min 5 s; even with every jitter at -20 % the last
attempt comes more than 24 h after the first, so an endpoint down for a day
still gets the delivery. After the eighth failed attempt the delivery is
dead (the dead-letter store).

A ``Retry-After`` sent by the target (429 or 503) is a lower bound on the
next wait; the sender caps it (one hour by default) before it gets here.
"""

from __future__ import annotations

import random

# Seconds to wait after the n-th failed attempt (n = index + 1).
RETRY_DELAYS_S: tuple[float, ...] = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 14 * 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
JITTER = 0.2


def next_delay(
    attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before the next attempt, after ``attempt`` attempts
    (1 for the first) all failed; ``None`` when there is none left: the
    delivery is dead."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if attempt > len(RETRY_DELAYS_S):
        return None
    base = RETRY_DELAYS_S[attempt - 1]
    source = rng if rng is not None else _rng
    delay = base * (1 + source.uniform(-JITTER, JITTER))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


# Jitter only spreads load: no need for a cryptographic source.
_rng = random.Random()  # noqa: S311
