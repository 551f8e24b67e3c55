"""One way to retry: exponential backoff with random jitter, from stamina.

Every loop that waits for Kafka or PostgreSQL to come back uses it, so they
all back off alike, their waits are spread by jitter (replicas that failed
together do not hammer a recovering broker in step) and each retry is logged
in one shape: what was being done, why it failed, which retry, how long until.

- :func:`retry` runs a step until it succeeds (connecting at start-up).
- :func:`keep_running` runs a step for ever (a worker's loop): each step that
  returns has made progress, so the next failure waits the shortest time
  again, while a step that keeps failing waits longer and longer.
- :meth:`Backoff.delay_s` gives the same waits to a loop that must decide
  itself what to do between attempts (the consumer loop parks a record
  after its bound).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import stamina
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from datapolis_shared.errors import DatapolisError

log = logging.getLogger(__name__)

T = TypeVar("T")
RetryOn = type[Exception] | tuple[type[Exception], ...]


@dataclass(frozen=True)
class Backoff:
    """Waits of ``initial_s``, doubling up to ``max_s``, each plus a random
    ``0..jitter_s`` (stamina clips the sum at ``max_s``)."""

    initial_s: float = 0.5
    max_s: float = 10.0
    jitter_s: float = 0.5

    def delay_s(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (from 1), computed as
        :func:`retry` waits, for loops that decide for themselves what
        happens between attempts (park a record, pause for a dependency)."""
        exponential = self.initial_s * 2.0 ** min(attempt - 1, 64)
        jitter = random.uniform(0, self.jitter_s)  # noqa: S311 - spreading, not security
        return min(self.max_s, exponential + jitter)


DEFAULT_BACKOFF = Backoff()

# What the running retry is doing, for the log line (stamina's hook only knows
# the callable's name, which for a retried block is "<context block>").
_doing: ContextVar[str] = ContextVar("retrying", default="an operation")
_hooks_installed = False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DatapolisError):
        cause = exc.__cause__
        return f"{exc.message} (cause: {cause!r})" if cause is not None else exc.message
    return repr(exc)


def _log_retry(details: RetryDetails) -> None:
    log.warning(
        "%s failed: %s; retry %d in %.1fs",
        _doing.get(),
        _describe(details.caused_by),
        details.retry_num,
        details.wait_for,
    )


def _install_hooks() -> None:
    # Replaces stamina's defaults: its Prometheus counter would land in the
    # global registry, which no service exposes (each has its own), and its
    # log record carries the retried callable's arguments.
    global _hooks_installed  # noqa: PLW0603 - set once per process
    if not _hooks_installed:
        set_on_retry_hooks([_log_retry])
        _hooks_installed = True


async def retry(
    step: Callable[[], Awaitable[T]],
    *,
    doing: str,
    on: RetryOn = Exception,
    backoff: Backoff = DEFAULT_BACKOFF,
    attempts: int | None = None,
    timeout_s: float | None = None,
) -> T:
    """``step()``'s result, retrying while it raises ``on``; any other
    exception propagates at once. Without ``attempts`` or ``timeout_s`` it
    retries for ever; with them, the last failure propagates.
    ``doing`` names the step in the log ("connecting to Kafka")."""
    _install_hooks()
    caller = stamina.AsyncRetryingCaller(
        attempts=attempts,
        timeout=timeout_s,
        wait_initial=backoff.initial_s,
        wait_max=backoff.max_s,
        wait_jitter=backoff.jitter_s,
    )
    token = _doing.set(doing)
    try:
        return await caller(on, step)
    finally:
        _doing.reset(token)


async def keep_running(
    step: Callable[[], Awaitable[None]],
    *,
    doing: str,
    on: RetryOn = Exception,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> NoReturn:
    """Run ``step`` again and again until cancelled, backing off while it fails."""
    while True:
        await retry(step, doing=doing, on=on, backoff=backoff)
