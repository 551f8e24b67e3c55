"""The per-interval counts and the records counter: every record counted once
on /metrics, even when a flush fails and its counts wait for the next one."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from datapolis_ingest.stats import StatsAggregator, records_counter
from datapolis_shared.errors import Unavailable
from tests.unit.ingest.test_ingestor import FakeSink


def _value(registry: CollectorRegistry, channel: str, outcome: str) -> float | None:
    return registry.get_sample_value(
        "datapolis_ingest_records_total", {"channel": channel, "outcome": outcome}
    )


def test_every_series_exists_at_zero_before_any_record() -> None:
    registry = CollectorRegistry()
    records_counter(registry)
    for channel in ("http", "kafka"):
        for outcome in ("accepted", "rejected", "duplicate"):
            assert _value(registry, channel, outcome) == 0


async def test_a_failed_flush_keeps_its_counts_without_counting_twice() -> None:
    registry = CollectorRegistry()
    sink = FakeSink()
    stats = StatsAggregator(lambda: sink, interval_s=60, records=records_counter(registry))
    stats.add(
        dataset_id="d1",
        slug="meters",
        producer_org_id="org-1",
        channel="kafka",
        accepted=5,
        rejected=2,
        duplicates=1,
    )
    sink.fail = True
    with pytest.raises(Unavailable):
        await stats.flush()
    sink.fail = False
    assert await stats.flush() == 1  # the counts went with the next flush...
    assert len(sink.sent) == 1
    assert stats.events() == []
    # ...and the counter saw each record once.
    assert _value(registry, "kafka", "accepted") == 5
    assert _value(registry, "kafka", "rejected") == 2
    assert _value(registry, "kafka", "duplicate") == 1
    assert _value(registry, "http", "accepted") == 0
