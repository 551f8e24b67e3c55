"""Live stats of a dataset from tumbling windows of ingest's batch counts.

The stats worker keeps, per dataset, the accepted and rejected counts of each
tumbling window (60 s by default, kept for an hour) and periodically turns
them into what a dataset's page shows. This module is that arithmetic (pure)
and the SQL that stores its result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from datapolis_shared.postgres.pool import Pool

UPSERT_STATS = """
INSERT INTO dataset_stats (dataset_id, records_per_minute, accepted_last_hour,
                           rejected_last_hour, rejection_rate, last_record_at, updated_at)
SELECT $1, $2, $3, $4, $5, $6, now()
WHERE EXISTS (SELECT 1 FROM datasets WHERE dataset_id = $1)
ON CONFLICT (dataset_id) DO UPDATE SET
    records_per_minute = EXCLUDED.records_per_minute,
    accepted_last_hour = EXCLUDED.accepted_last_hour,
    rejected_last_hour = EXCLUDED.rejected_last_hour,
    rejection_rate = EXCLUDED.rejection_rate,
    last_record_at = GREATEST(dataset_stats.last_record_at, EXCLUDED.last_record_at),
    updated_at = now()
"""


@dataclass(frozen=True)
class WindowCounts:
    accepted: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class StatsSnapshot:
    dataset_id: str
    records_per_minute: float
    accepted_last_hour: int
    rejected_last_hour: int
    rejection_rate: float | None
    last_record_at: datetime | None


def window_start(timestamp: float, size_s: float) -> float:
    return math.floor(timestamp / size_s) * size_s


def window_starts(now: float, size_s: float, horizon_s: float) -> list[float]:
    """Starts of the windows covering the last ``horizon_s``, newest first."""
    current = window_start(now, size_s)
    count = max(1, math.ceil(horizon_s / size_s))
    return [current - i * size_s for i in range(count)]


def summarise(
    dataset_id: str,
    windows: Mapping[float, WindowCounts],
    *,
    now: float,
    size_s: float,
    last_record_at: float | None,
) -> StatsSnapshot:
    """``windows`` maps window starts to counts. Records per minute is a
    sliding estimate: the current window plus the part of the previous one
    that the sliding minute still covers, so the figure does not drop to zero
    each time a window starts."""
    current = window_start(now, size_s)
    elapsed = (now - current) / size_s
    here = windows.get(current, WindowCounts())
    before = windows.get(current - size_s, WindowCounts())
    per_window = here.accepted + before.accepted * (1.0 - elapsed)
    accepted = sum(w.accepted for w in windows.values())
    rejected = sum(w.rejected for w in windows.values())
    total = accepted + rejected
    return StatsSnapshot(
        dataset_id=dataset_id,
        records_per_minute=round(per_window * 60.0 / size_s, 3),
        accepted_last_hour=accepted,
        rejected_last_hour=rejected,
        rejection_rate=round(rejected / total, 6) if total else None,
        last_record_at=datetime.fromtimestamp(last_record_at, UTC) if last_record_at else None,
    )


async def save_stats(pool: Pool, snapshots: Sequence[StatsSnapshot]) -> None:
    """Store snapshots; datasets this catalog does not know are ignored."""
    if not snapshots:
        return
    await pool.executemany(
        UPSERT_STATS,
        [
            (
                s.dataset_id,
                s.records_per_minute,
                s.accepted_last_hour,
                s.rejected_last_hour,
                s.rejection_rate,
                s.last_record_at,
            )
            for s in snapshots
        ],
    )
