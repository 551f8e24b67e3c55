"""Record-id deduplication within a bounded window, in this process's memory.

At 20,000 records/s a database write per record id would be the bottleneck,
so ids live in memory: per dataset, for ``window_s`` or until ``max_ids`` are
held (the oldest go first). The guarantee is therefore per process and
bounded: a retry that reaches another ingest replica, or arrives after the
window, is written again. The Gateway pins each API key to one replica to make
the first case rare (see the README, Idempotency). Consumers that need
exactly-once keep the record id (``ce_id``) as a natural key.

Ids are held while their batch is in flight (``reserve``) and remembered only
once Kafka acknowledged it (``commit``); a batch that failed releases them
(``release``) so its retry is not taken for a duplicate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence


class RecordIdWindow:
    __slots__ = ("_max_ids", "_pending", "_seen", "_window_s")

    def __init__(self, *, window_s: float, max_ids: int) -> None:
        self._window_s = window_s
        self._max_ids = max_ids
        # id -> when it expires; order is expiry order. An OrderedDict, not a
        # dict: evicting from the front of a plain dict leaves holes that
        # every later ``next(iter())`` walks over, which made a full window
        # cost 60-190 µs per id instead of 1 (bench/dedup.py).
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._pending: set[str] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def is_known(self, record_id: str, now: float) -> bool:
        if record_id in self._pending:
            return True
        expires = self._seen.get(record_id)
        return expires is not None and expires > now

    def reserve(self, record_id: str) -> None:
        self._pending.add(record_id)

    def release(self, record_ids: Iterable[str]) -> None:
        self._pending.difference_update(record_ids)

    def commit(self, record_ids: Sequence[str], now: float) -> None:
        seen = self._seen
        self._pending.difference_update(record_ids)
        size = len(seen)
        # New ids go to the end in one C-level update; the expiry of them all
        # is the latest there is, so expiry order holds.
        seen.update(dict.fromkeys(record_ids, now + self._window_s))
        if len(seen) - size != len(record_ids):
            # Some were here already (expired, or repeated): update() left
            # them where they were, so they move to the end too.
            for record_id in record_ids:
                seen.move_to_end(record_id)
        self._evict(now)

    def _evict(self, now: float) -> None:
        seen = self._seen
        pop_oldest = seen.popitem
        for _ in range(len(seen) - self._max_ids):
            pop_oldest(last=False)
        while seen:
            if next(iter(seen.values())) > now:
                return
            pop_oldest(last=False)
