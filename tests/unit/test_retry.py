"""The one retry helper: backoff with jitter, what it retries and what it lets
through, one log line per retry, and loops whose backoff restarts after
progress."""

from __future__ import annotations

import logging
import re

import pytest

from datapolis_shared.errors import Unavailable
from datapolis_shared.retry import Backoff, keep_running, retry

FAST = Backoff(initial_s=0.01, max_s=0.05, jitter_s=0.01)
RETRY_LINE = re.compile(r"(.+) failed: (.+); retry (\d+) in ([0-9.]+)s")


def _retries(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int, float]]:
    found = []
    for record in caplog.records:
        if record.name == "datapolis_shared.retry":
            match = RETRY_LINE.fullmatch(record.getMessage())
            assert match, record.getMessage()
            doing, why, num, wait = match.groups()
            found.append((doing, why, int(num), float(wait)))
    return found


class _Stop(BaseException):
    """Ends a loop the way a cancellation would."""


async def test_retry_waits_with_jitter_until_the_step_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            try:
                raise ConnectionRefusedError(111, "refused")
            except OSError as exc:
                raise Unavailable("Kafka is unreachable") from exc
        return "connected"

    assert await retry(flaky, doing="connecting", on=Unavailable, backoff=FAST) == "connected"
    assert calls == 4
    logged = _retries(caplog)
    assert [num for _, _, num, _ in logged] == [1, 2, 3]
    for doing, why, num, wait in logged:
        assert doing == "connecting"
        assert why.startswith("Kafka is unreachable (cause: ConnectionRefusedError(")
        # Rounded to 0.1 s in the log line: bounded by the schedule.
        assert wait <= min(FAST.max_s, FAST.initial_s * 2 ** (num - 1) + FAST.jitter_s) + 0.05


async def test_retry_lets_other_errors_through_at_once() -> None:
    calls = 0

    async def buggy() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await retry(buggy, doing="x", on=Unavailable, backoff=FAST)
    assert calls == 1


async def test_retry_gives_up_after_its_attempts() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise Unavailable(f"down {calls}")

    with pytest.raises(Unavailable, match="down 3"):
        await retry(down, doing="x", on=Unavailable, backoff=FAST, attempts=3)
    assert calls == 3


async def test_keep_running_restarts_its_backoff_after_progress(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    outcomes = iter(["fail", "fail", "fail", "ok", "fail", "ok", "stop"])

    async def step() -> None:
        outcome = next(outcomes)
        if outcome == "fail":
            raise ConnectionResetError("lost")
        if outcome == "stop":
            raise _Stop

    with pytest.raises(_Stop):
        await keep_running(step, doing="following changes", backoff=FAST)
    assert [num for _, _, num, _ in _retries(caplog)] == [1, 2, 3, 1]
