"""One HTTP batch, end to end: who may push, how much, idempotency, and the
guarantee that a 2xx means Kafka acknowledged every accepted record and every
dead letter (acks=all).

Answer: 200 with ``{accepted, duplicates, rejected: [{index, errors}]}`` once
every record is accounted for: written to the dataset topic, written to the
dead letters, or dropped as a duplicate of a record already written. Partial
rejection is still 200 (not 207, whose WebDAV semantics add nothing here); the
``rejected`` list says which records to fix.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import orjson

from datapolis_ingest.dedup import RecordIdWindow
from datapolis_ingest.idempotency import Claim, IdempotencyStore, check_key, request_hash
from datapolis_ingest.limits import DEFAULT_MAX_RECORD_BYTES, RecordSizeLimits
from datapolis_ingest.ports import RecordSink
from datapolis_ingest.records import (
    Preparer,
    dead_letters,
    parse_json_batch,
    parse_ndjson,
    rejection_summary,
)
from datapolis_ingest.registry import Dataset
from datapolis_ingest.settings import IngestSettings
from datapolis_ingest.stats import StatsAggregator
from datapolis_ingest.validation import Validator
from datapolis_shared.auth import Principal
from datapolis_shared.errors import Forbidden, InvalidInput, Overloaded, TooLarge

BodyFormat = Literal["json", "ndjson"]
INGEST_SCOPE = "ingest"


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes  # JSON
    replayed: bool = False


class Datasets(Protocol):
    def require(self, slug: str, *, asker: str) -> Dataset: ...

    def require_version(self, dataset: Dataset, version: int, *, asker: str) -> None: ...


class DedupWindows:
    """One record-id window per dataset (bounded each)."""

    def __init__(self, *, window_s: float, max_ids: int) -> None:
        self._window_s = window_s
        self._max_ids = max_ids
        self._windows: dict[str, RecordIdWindow] = {}

    def for_dataset(self, dataset_id: str) -> RecordIdWindow:
        window = self._windows.get(dataset_id)
        if window is None:
            window = RecordIdWindow(window_s=self._window_s, max_ids=self._max_ids)
            self._windows[dataset_id] = window
        return window


class Ingestor:
    def __init__(
        self,
        settings: IngestSettings,
        *,
        registry: Datasets,
        sink: Callable[[], RecordSink],
        idempotency: IdempotencyStore,
        stats: StatsAggregator,
        windows: DedupWindows,
        sizes: RecordSizeLimits | None = None,
    ) -> None:
        self._max_records = settings.max_batch_records
        self._max_in_flight = settings.max_in_flight_records
        self._registry = registry
        self._sink = sink
        self._idempotency = idempotency
        self._stats = stats
        self._windows = windows
        self._sizes = sizes
        self.in_flight = 0

    async def ingest(
        self,
        *,
        caller: Principal,
        slug: str,
        body: bytes,
        body_format: BodyFormat,
        idempotency_key: str | None = None,
        schema_version: int | None = None,
    ) -> Answer:
        """``schema_version``: the version the producer's records follow, as
        catalog answered it; they are never validated under an older one."""
        caller.require(INGEST_SCOPE)
        dataset = self._registry.require(slug, asker=caller.org_id)
        if caller.org_id != dataset.publisher_id:
            raise Forbidden(
                f"only the publisher of {slug!r} may push its records",
                code="not-dataset-publisher",
                slug=slug,
            )
        validator = dataset.accepting()
        if schema_version is not None:
            self._registry.require_version(dataset, schema_version, asker=caller.org_id)

        claim: Claim | None = None
        if idempotency_key is not None:
            claim = Claim(caller.org_id, dataset.dataset_id, check_key(idempotency_key))
            replay = await self._idempotency.claim(claim, request_hash(body_format, body))
            if replay is not None:
                return Answer(replay, replayed=True)
        try:
            answer = await self._ingest(caller, dataset, validator, body, body_format)
        except BaseException:
            if claim is not None:
                await self._idempotency.release(claim)
            raise
        if claim is not None:
            await self._idempotency.store(claim, answer.body)
        return answer

    async def _ingest(
        self,
        caller: Principal,
        dataset: Dataset,
        validator: Validator,
        body: bytes,
        body_format: BodyFormat,
    ) -> Answer:
        raws: list[bytes | None] | None
        if body_format == "ndjson":
            items, raws = parse_ndjson(body)
        else:
            items, raws = parse_json_batch(body)
        count = len(items)
        if count == 0:
            raise InvalidInput("the batch holds no records", code="empty-batch")
        if count > self._max_records:
            raise TooLarge(
                f"a batch holds at most {self._max_records} records, this one {count}",
                code="too-many-records",
                max_records=self._max_records,
            )
        if self.in_flight + count > self._max_in_flight:
            raise Overloaded(
                "too many records waiting for Kafka's acknowledgement; retry shortly",
                retry_after_s=1,
            )
        sink = self._sink()  # Unavailable before Kafka is connected: nothing reserved yet

        window = self._windows.for_dataset(dataset.dataset_id)
        max_record_bytes = (
            await self._sizes.for_topic(dataset.topic)
            if self._sizes is not None
            else DEFAULT_MAX_RECORD_BYTES
        )
        preparer = Preparer(
            dataset,
            validator,
            producer=caller.org_id,
            id_prefix=f"{uuid.uuid4()}-",
            max_record_bytes=max_record_bytes,
        )
        now = time.monotonic()
        prepared = preparer.prepare(items, window, now, raws=raws)
        # The parsed records are not needed while Kafka acknowledges: freed
        # now, they are not carried through garbage collections meanwhile.
        del items, raws
        records = prepared.outgoing
        if prepared.rejections:
            records = records + dead_letters(
                prepared.rejections, dataset, producer_org_id=caller.org_id, channel="http"
            )
        self.in_flight += count
        try:
            if records:
                await sink.send_many(records)
        except BaseException:
            window.release(prepared.reserved_ids)
            raise
        finally:
            self.in_flight -= count
        window.commit(prepared.reserved_ids, time.monotonic())

        accepted = len(prepared.outgoing)
        self._stats.add(
            dataset_id=dataset.dataset_id,
            slug=dataset.slug,
            producer_org_id=caller.org_id,
            channel="http",
            accepted=accepted,
            rejected=len(prepared.rejections),
            duplicates=prepared.duplicates,
        )
        return Answer(
            orjson.dumps(
                {
                    "dataset": dataset.slug,
                    "schema_version": dataset.schema_version,
                    "accepted": accepted,
                    "duplicates": prepared.duplicates,
                    "rejected": rejection_summary(prepared.rejections),
                }
            )
        )
