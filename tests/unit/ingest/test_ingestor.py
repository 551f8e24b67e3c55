"""The ingestor with a fake sink: load shedding, and a failed write that
leaves nothing half-remembered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from datapolis_ingest.ingestion import DedupWindows, Ingestor
from datapolis_ingest.registry import Dataset
from datapolis_ingest.settings import IngestSettings
from datapolis_ingest.stats import StatsAggregator
from datapolis_shared.auth import Principal
from datapolis_shared.errors import Forbidden, Overloaded, Unavailable
from datapolis_shared.kafka import OutgoingRecord
from tests.unit.ingest.test_records import _dataset

PUBLISHER = Principal("org-1", "key-1", frozenset({"ingest"}))


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[OutgoingRecord] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def send_many(self, records: Sequence[OutgoingRecord]) -> Sequence[object]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise Unavailable("Kafka did not acknowledge the records")
        self.sent.extend(records)
        return [None] * len(records)


class OneDataset:
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def require(self, slug: str, *, asker: str) -> Dataset:
        return self.dataset

    def require_version(self, dataset: Dataset, version: int, *, asker: str) -> None:
        return None


def _ingestor(sink: FakeSink, **settings: int) -> Ingestor:
    config = IngestSettings(dev=True, **settings)  # type: ignore[arg-type]
    return Ingestor(
        config,
        registry=OneDataset(_dataset()),
        sink=lambda: sink,
        idempotency=None,  # type: ignore[arg-type] # no Idempotency-Key in these tests
        stats=StatsAggregator(lambda: sink, interval_s=60),
        windows=DedupWindows(window_s=60, max_ids=1000),
    )


def _body(*ids: str) -> bytes:
    return orjson.dumps([{"id": i, "meter_id": "m-1", "kwh": 1} for i in ids])


async def test_a_batch_beyond_the_in_flight_limit_is_shed_not_buffered() -> None:
    sink = FakeSink()
    sink.gate = asyncio.Event()
    ingestor = _ingestor(sink, max_batch_records=2, max_in_flight_records=3)
    first = asyncio.create_task(
        ingestor.ingest(caller=PUBLISHER, slug="meters", body=_body("a", "b"), body_format="json")
    )
    await asyncio.sleep(0.01)
    assert ingestor.in_flight == 2

    with pytest.raises(Overloaded):
        await ingestor.ingest(
            caller=PUBLISHER, slug="meters", body=_body("c", "d"), body_format="json"
        )

    sink.gate.set()
    assert orjson.loads((await first).body)["accepted"] == 2
    assert ingestor.in_flight == 0


async def test_a_failed_write_forgets_its_ids_so_the_retry_goes_through() -> None:
    sink = FakeSink()
    sink.fail = True
    ingestor = _ingestor(sink)
    with pytest.raises(Unavailable):
        await ingestor.ingest(caller=PUBLISHER, slug="meters", body=_body("a"), body_format="json")
    sink.fail = False
    answer = await ingestor.ingest(
        caller=PUBLISHER, slug="meters", body=_body("a"), body_format="json"
    )
    assert orjson.loads(answer.body)["accepted"] == 1
    assert ingestor.in_flight == 0


async def test_only_the_publisher_pushes() -> None:
    ingestor = _ingestor(FakeSink())
    stranger = Principal("org-2", "key-2", frozenset({"ingest"}))
    with pytest.raises(Forbidden):
        await ingestor.ingest(caller=stranger, slug="meters", body=_body("a"), body_format="json")


async def test_a_record_naming_a_key_twice_reaches_kafka_as_it_was_validated() -> None:
    # Validation sees the last "kwh" (orjson keeps it); a reader keeping the
    # first would get a string nobody checked, so the raw bytes do not go on.
    body = b'[{"id": "a", "meter_id": "m-1", "kwh": "not a number", "kwh": 2.5}]'
    for fmt, payload in (("json", body), ("ndjson", body[1:-1] + b"\n")):
        sink = FakeSink()
        answer = await _ingestor(sink).ingest(
            caller=PUBLISHER, slug="meters", body=payload, body_format=fmt
        )
        assert orjson.loads(answer.body)["accepted"] == 1
        [sent] = [r.value for r in sink.sent if r.topic == "data.meters"]
        assert sent.count(b'"kwh"') == 1
        assert orjson.loads(sent) == {"id": "a", "meter_id": "m-1", "kwh": 2.5}


async def test_valid_records_of_a_json_array_reach_kafka_as_they_were_sent() -> None:
    # Spacing, key order and number spelling that serializing again would
    # change (1.50 -> 1.5, 1e2 -> 100.0): the bytes go on unchanged, each
    # record's own slice of the body.
    records = [
        b'{ "kwh": 1.50, "id": "a", "meter_id": "m-1" }',
        b'{"id":"b","meter_id":"m-1","kwh":1e2,"note":"a/b: \xc3\xa9t\xc3\xa9"}',
    ]
    body = b"[\n  " + b",\n  ".join(records) + b"\n]"
    sink = FakeSink()
    answer = await _ingestor(sink).ingest(
        caller=PUBLISHER, slug="meters", body=body, body_format="json"
    )
    assert orjson.loads(answer.body)["accepted"] == 2
    assert [r.value for r in sink.sent if r.topic == "data.meters"] == records
