"""Which offsets may be committed: up to the lowest record not yet settled.

A record is held once per subscription it was offered to, and released when
that subscription's outcome is durable (delivered and logged, withheld and
logged, filtered out, or in the delivery queue). The committable offset of a
partition is its lowest held offset, or the next one to read when none is
held: a worker killed at any moment reads again every record whose outcome
was not yet durable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Release = Callable[[], None]


@dataclass
class _Partition:
    next_offset: int = -1
    held: dict[int, int] = field(default_factory=dict)
    committed: int = -1

    def committable(self) -> int:
        return min(self.held) if self.held else self.next_offset


@dataclass
class OffsetTracker:
    partitions: dict[tuple[str, int], _Partition] = field(default_factory=dict)

    def read(self, topic: str, partition: int, offset: int, holds: int) -> Release:
        """Record that ``offset`` was read and is held ``holds`` times; the
        returned function releases one hold (extra calls are ignored)."""
        part = self.partitions.setdefault((topic, partition), _Partition())
        part.next_offset = max(part.next_offset, offset + 1)
        if holds <= 0:
            return _noop
        part.held[offset] = part.held.get(offset, 0) + holds
        released = 0

        def release() -> None:
            nonlocal released
            if released >= holds:
                return
            released += 1
            left = part.held.get(offset, 0) - 1
            if left <= 0:
                part.held.pop(offset, None)
            else:
                part.held[offset] = left

        return lambda: release()

    def held(self) -> int:
        return sum(sum(p.held.values()) for p in self.partitions.values())

    def to_commit(self) -> dict[tuple[str, int], int]:
        """Partitions whose committable offset moved since the last commit."""
        moved = {}
        for tp, part in self.partitions.items():
            offset = part.committable()
            if offset > part.committed and offset >= 0:
                moved[tp] = offset
        return moved

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        for tp, offset in offsets.items():
            if tp in self.partitions:
                self.partitions[tp].committed = max(self.partitions[tp].committed, offset)

    def forget(self, tps: set[tuple[str, int]]) -> None:
        """Partitions taken away by a rebalance: their new owner reads again
        from the last commit."""
        for tp in tps:
            self.partitions.pop(tp, None)


def _noop() -> None:
    return None
