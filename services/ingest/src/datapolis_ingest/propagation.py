"""Telling "not known yet" from "does not exist".

Catalog answers 201 once a dataset or schema version is committed; ingest
learns it from ``datapolis.catalog.events`` a moment later (outbox relay,
Kafka, the registry consumer, NOTIFY to every process). Ingest states a bound
for that moment, ``propagation_bound_s``, and never calls catalog, so when it
is asked for a dataset or schema version it does not hold, it cannot tell at
once whether catalog created it a moment ago or never did.

A producer that was told 201 asks after it, so within the bound of its first
request ingest knows the thing or catalog never created it. Hence: the first
request for an unknown name opens a window of ``bound_s``; during it the
answer is "not known yet" (retryable), after it "does not exist" (final).
The bound holds only while ingest keeps up with catalog's events, so the
answer stays "not known yet" while the process is not listening for changes
or its registry consumer has events left to apply (a new consumer group
reads the topic from its beginning).
Windows are per asking organisation, so one organisation's requests never
shorten another's wait. A final answer closes the window: a name registered
later starts a new one at its next request. Windows are kept in memory, at
most ``max_names`` of them (the oldest go first, which only means another
"not known yet" window).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from datapolis_shared.errors import Unavailable

# Catalog's rule for slugs: a name that breaks it can never exist.
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
# How long a producer is told to wait before retrying.
RETRY_AFTER_S = 1


class NotKnownYet(Unavailable):
    """A dataset or schema version ingest may learn from catalog any moment:
    retry after ``retry_after_s``."""

    def __init__(self, message: str, *, code: str, **extra: object) -> None:
        super().__init__(message, code=code, retry_after_s=RETRY_AFTER_S, **extra)


class UnknownNames:
    """For each (asker, name) ingest does not know, when it was first asked."""

    def __init__(
        self,
        bound_s: float,
        *,
        max_names: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bound_s = bound_s
        self._max_names = max_names
        self._clock = clock
        self._first_asked: OrderedDict[Hashable, float] = OrderedDict()

    def settled(self, name: Hashable, *, caught_up: bool = True) -> bool:
        """True once ``name`` has been unknown for longer than the bound since
        it was first asked for: it does not exist (and the window closes).
        False while it may still be on its way, and always while the caller
        is not ``caught_up`` with catalog's events."""
        now = self._clock()
        first = self._first_asked.get(name)
        if first is None:
            self._first_asked[name] = now
            while len(self._first_asked) > self._max_names:
                self._first_asked.popitem(last=False)
            return caught_up and self.bound_s <= 0
        if caught_up and now - first > self.bound_s:
            del self._first_asked[name]
            return True
        return False

    def __len__(self) -> int:
        return len(self._first_asked)
