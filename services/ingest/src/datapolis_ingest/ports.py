"""What the ingest domain needs from the outside, as Protocols: a way to
write records and have Kafka acknowledge them (the shared ``Producer`` is one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from datapolis_shared.kafka import OutgoingRecord


class RecordSink(Protocol):
    async def send_many(self, records: Sequence[OutgoingRecord]) -> Sequence[object]:
        """Return once every record is acknowledged (acks=all), or raise
        :class:`datapolis_shared.errors.Unavailable`."""
        ...
