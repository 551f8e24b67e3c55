"""Record-id window benchmark: prints figures, it is not a timed test.

    uv run python bench/dedup.py [--ids 800000] [--max-ids 500000]

Pure CPU, nothing to start. Feeds fresh ids through one ``RecordIdWindow``
as the ingest hot path does (is_known and reserve per record, commit per
batch of 100) and prints the cost per id for every 100,000 ids, before and
after the window is full. A full window evicts its oldest ids on every
commit; the cost per id must stay flat there (about 1-2 µs here), not grow.
"""

from __future__ import annotations

import argparse
import time
import uuid

from datapolis_ingest.dedup import RecordIdWindow

BATCH = 100
STEP = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=800_000)
    parser.add_argument("--max-ids", type=int, default=500_000, help="the window's bound")
    args = parser.parse_args()

    window = RecordIdWindow(window_s=900, max_ids=args.max_ids)
    ids = [uuid.uuid4().hex for _ in range(args.ids)]
    print(f"{args.ids:,} fresh ids, window bound {args.max_ids:,}, batches of {BATCH}")
    started = time.perf_counter()
    for i in range(0, len(ids), BATCH):
        batch = ids[i : i + BATCH]
        for record_id in batch:
            window.is_known(record_id, 0.0)
            window.reserve(record_id)
        window.commit(batch, 1.0)
        done = i + BATCH
        if done % STEP == 0:
            now = time.perf_counter()
            state = "full" if done > args.max_ids else "filling"
            print(f"{done:>9,} ids ({state}): {(now - started) * 1e6 / STEP:.2f} µs per id")
            started = now


if __name__ == "__main__":
    main()
