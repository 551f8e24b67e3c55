"""The limits a single record must respect, checked before it is validated or
produced: how deep it nests, and how large its Kafka record is against what
the dataset topic (``max.message.bytes``) and the producer
(``max_request_size``) accept.

A record over a limit is rejected on its own, with a stable code, like any
invalid record: the others of its batch go on. Sending it would fail at the
broker as a permanent error that looks retryable, and would disturb the
writes that share its partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datapolis_shared.errors import DatapolisError
from datapolis_shared.events.cloudevents import Headers
from datapolis_shared.kafka import DEFAULT_MAX_REQUEST_SIZE, record_size
from datapolis_shared.limits import MAX_RECORD_DEPTH, RECORD_TOO_DEEP, clipped, exceeds_depth

log = logging.getLogger(__name__)

RECORD_TOO_LARGE = "record-too-large"
# Kafka's default max.message.bytes, assumed for a topic whose own value
# cannot be read.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
# What a record may take when nothing more is known: the lesser of Kafka's
# default max.message.bytes and the producer's default max_request_size.
DEFAULT_MAX_RECORD_BYTES = min(DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_REQUEST_SIZE)
# What a record batch adds around one record (batch header, produce request),
# so a record that passes the check also fits once Kafka has wrapped it.
BATCH_OVERHEAD_BYTES = 512
# How long a topic's max.message.bytes is trusted before it is read again.
TOPIC_LIMIT_TTL_S = 60.0
# Kept of a refused record in its dead letter (the dead letter must fit too).
DEAD_LETTER_HEAD_DEPTH = 8


@dataclass(frozen=True, slots=True)
class OverLimit:
    """A record refused for its shape before validation."""

    code: str
    message: str
    payload: Any  # what its dead letter keeps: the raw text or a clipped copy
    line: int | None = None


_TOO_DEEP_MESSAGE = f"a record nests at most {MAX_RECORD_DEPTH} objects or arrays deep"


def _openers(text: bytes) -> int:
    """How many objects and arrays ``text`` opens, at most: each one starts
    with a bracket, and brackets inside strings only make the count larger."""
    return text.count(b"{") + text.count(b"[")


def too_deep(item: Any, raw: bytes | None = None, line: int | None = None) -> OverLimit | None:
    """An :class:`OverLimit` when ``item`` (parsed from ``raw``) nests deeper
    than the limit."""
    if raw is not None and _openers(raw) <= MAX_RECORD_DEPTH:
        return None  # the common case, without walking the record
    if not exceeds_depth(item, MAX_RECORD_DEPTH):
        return None
    if raw is not None:
        return too_deep_text(raw.decode("utf-8", errors="replace"), line)
    return OverLimit(
        RECORD_TOO_DEEP, _TOO_DEEP_MESSAGE, clipped(item, DEAD_LETTER_HEAD_DEPTH), line
    )


def too_deep_text(text: str, line: int | None = None) -> OverLimit:
    """A record (NDJSON line, raw-topic value) too deep even for the parser."""
    return OverLimit(RECORD_TOO_DEEP, _TOO_DEEP_MESSAGE, text, line)


def screen_depth(
    items: list[Any], raws: Sequence[bytes | None] | None = None, *, body: bytes | None = None
) -> list[Any]:
    """``items`` with each record nested too deep replaced by its :class:`OverLimit`.

    ``body``, the JSON array ``items`` were parsed from, spares the walk over
    the records when its brackets show none can be too deep: the array, and
    each of its containers but the deepest one's, take at least one bracket
    each, so no record nests deeper than the brackets minus the containers."""
    if body is not None:
        kinds = list(map(type, items))
        containers = kinds.count(dict) + kinds.count(list)
        if _openers(body) - containers <= MAX_RECORD_DEPTH:
            return items
    for index, item in enumerate(items):
        kind = type(item)
        if kind is dict or kind is list:
            refused = too_deep(item, raws[index] if raws is not None else None)
            if refused is not None:
                items[index] = refused
    return items


# A record's headers are the dataset's CloudEvents attributes (well under
# this) and values taken from the record (its id, key and subject: each no
# longer than its value), so 4 x value + key + this bounds its size.
SIZE_SCREEN_MARGIN = 8192


def kafka_size(value: bytes, key: bytes | None, headers: Headers) -> int:
    return record_size(value, key, headers) + BATCH_OVERHEAD_BYTES


def size_error(value: bytes, key: bytes | None, headers: Headers, max_bytes: int) -> str | None:
    """Why the record is too large for its topic, or None.

    Only records whose value, key and record-derived headers could reach the
    limit are measured exactly: the rest cost one comparison."""
    if 4 * len(value) + len(key or b"") + SIZE_SCREEN_MARGIN <= max_bytes:
        return None
    size = kafka_size(value, key, headers)
    if size <= max_bytes:
        return None
    return (
        f"the record takes {size} bytes in Kafka (value, key and headers); "
        f"the dataset's topic accepts at most {max_bytes}"
    )


TopicConfigReader = Callable[[str], Awaitable[int | None]]


class RecordSizeLimits:
    """The largest record each dataset topic accepts: the lesser of its
    ``max.message.bytes`` (read from Kafka, cached) and the producer's
    ``max_request_size``."""

    def __init__(self, read_max_message_bytes: TopicConfigReader, *, max_request_size: int) -> None:
        self._read = read_max_message_bytes
        self._max_request_size = max_request_size
        self._known: dict[str, tuple[float, int]] = {}

    async def for_topic(self, topic: str) -> int:
        now = time.monotonic()
        known = self._known.get(topic)
        if known is not None and now - known[0] < TOPIC_LIMIT_TTL_S:
            return known[1]
        try:
            found = await self._read(topic)
        except DatapolisError as exc:
            # Keep accepting with what was known (or Kafka's default): the
            # producer still refuses what exceeds its own request size.
            log.warning("could not read max.message.bytes of %s: %s", topic, exc.message)
            found = None
        if found is None:
            found = known[1] if known is not None else DEFAULT_MAX_MESSAGE_BYTES
        limit = min(found, self._max_request_size)
        self._known[topic] = (now, limit)
        return limit
