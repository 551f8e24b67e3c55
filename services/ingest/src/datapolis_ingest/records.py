"""From a producer's records to Kafka records: parse, validate, deduplicate,
key, and wrap in CloudEvents binary mode; or reject, with reasons.

This is the hot path (20,000+ records/s in one process), so it works on plain
dicts and tuples: the CloudEvents headers are built once per batch by
``binary_headers`` and only ``ce_id`` (and ``ce_subject``) change per record;
no pydantic model is built per accepted record.

Both channels use it: HTTP batches and records read from ``raw.<slug>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import orjson

from datapolis_ingest.dedup import RecordIdWindow
from datapolis_ingest.limits import (
    DEAD_LETTER_HEAD_DEPTH,
    DEFAULT_MAX_RECORD_BYTES,
    RECORD_TOO_LARGE,
    SIZE_SCREEN_MARGIN,
    OverLimit,
    screen_depth,
    size_error,
    too_deep,
    too_deep_text,
)
from datapolis_ingest.registry import Dataset
from datapolis_ingest.validation import FieldError, Validator
from datapolis_shared.errors import InvalidInput
from datapolis_shared.events.cloudevents import binary_headers, to_structured
from datapolis_shared.events.ingest import RecordError, RecordRejected
from datapolis_shared.kafka import OutgoingRecord
from datapolis_shared.limits import MAX_RECORD_DEPTH, clipped

Channel = Literal["http", "kafka"]
# The field of a record that carries its id (see the README: idempotency).
RECORD_ID_FIELD = "id"
# A dead letter's payload is cut beyond this, so it always fits a Kafka message.
MAX_DEAD_LETTER_PAYLOAD_BYTES = 256 * 1024
BODY_TOO_DEEP = "body-too-deep"


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line of NDJSON that is not JSON."""

    line: int
    text: str
    message: str


@dataclass(slots=True)
class Rejection:
    index: int
    errors: list[FieldError]
    payload: Any
    line: int | None = None
    # Where a raw-topic record came from.
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    # Set when a limit refused the record (see ``limits``).
    code: str | None = None


@dataclass(slots=True)
class Prepared:
    """A batch sorted out: what goes to the dataset topic, what to the dead letters."""

    outgoing: list[OutgoingRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: int = 0
    # Ids held in the dedup window until the batch is acknowledged.
    reserved_ids: list[str] = field(default_factory=list)


def _position(body: bytes, pos: int) -> tuple[int, int]:
    before = body[:pos]
    line = before.count(b"\n") + 1
    column = pos - (before.rfind(b"\n") + 1) + 1
    return line, column


def _depth_exceeded(exc: orjson.JSONDecodeError) -> bool:
    return exc.msg.startswith("depth limit")


def parse_json_batch(body: bytes) -> tuple[list[Any], list[bytes | None] | None]:
    """Records of a JSON array (a single object is a batch of one), with each
    record's own bytes as they came, so a valid record goes to Kafka without
    being serialized again. A record nested too deep is an :class:`OverLimit`
    item, rejected on its own.

    orjson parses (and words the errors); msgspec then only scans the array
    for where each element starts and ends, about a quarter of a parse. If
    the scan disagrees with orjson in any way, the raw bytes are ``None`` and
    the records are serialized from what orjson parsed.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if _depth_exceeded(exc):
            raise InvalidInput(
                f"the body nests deeper than JSON parsing allows; "
                f"a record nests at most {MAX_RECORD_DEPTH} objects or arrays deep",
                code=BODY_TOO_DEEP,
                max_depth=MAX_RECORD_DEPTH,
            ) from exc
        line, column = _position(body, exc.pos)
        raise InvalidInput(
            f"the body is not valid JSON: {exc.msg} at line {line}, column {column}",
            code="malformed-json",
            line=line,
            column=column,
            position=exc.pos,
        ) from exc
    if isinstance(parsed, list):
        return screen_depth(parsed, body=body), _element_bytes(body, len(parsed))
    if isinstance(parsed, dict):
        return [too_deep(parsed) or parsed], [body.strip()]
    raise InvalidInput("the body must be a JSON array of records (objects)", code="not-a-batch")


_RAW_ELEMENTS: msgspec.json.Decoder[list[msgspec.Raw]] = msgspec.json.Decoder(list[msgspec.Raw])


def _element_bytes(body: bytes, count: int) -> list[bytes | None] | None:
    try:
        spans = _RAW_ELEMENTS.decode(body)
    except (msgspec.DecodeError, RecursionError):  # deep nesting orjson still takes
        return None
    if len(spans) != count:
        return None
    return [bytes(span) for span in spans]


def parse_ndjson(body: bytes) -> tuple[list[Any], list[bytes | None]]:
    """Records of an NDJSON body, one per non-blank line, with each line's
    bytes (forwarded as they came). A line that is not JSON is a
    :class:`Malformed` item: it is rejected on its own, the others go on."""
    items: list[Any] = []
    raws: list[bytes | None] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            item = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            text = stripped.decode("utf-8", errors="replace")
            if _depth_exceeded(exc):
                items.append(too_deep_text(text, number))
                raws.append(None)
                continue
            items.append(
                Malformed(number, text, f"not valid JSON: {exc.msg} at column {exc.pos + 1}")
            )
            raws.append(None)
            continue
        refused = too_deep(item, stripped, number)
        items.append(item if refused is None else refused)
        raws.append(stripped if refused is None else None)
    return items, raws


def bytes_to_send(raw: bytes | None, item: Any) -> bytes:
    """A record's own bytes, ``raw``, when they can go to Kafka in place of
    what was validated, else ``item`` serialized: not when they name a key
    twice. orjson keeps the last value of a repeated key, and that is what
    validation saw; a reader that keeps the first would get a value nobody
    checked.

    The proof counts colons. In bytes without an escape (no backslash)
    every string is spelled as in ``orjson.dumps(item)``, which keeps each
    member once; so the two hold the same colons (one per member, plus those
    inside strings) unless the bytes carry a member that parsing dropped.
    White space and number spellings hold no colon. Bytes with an escape
    (rare) are sent serialized. Serializing costs about 0.3 µs a record;
    walking the record in Python to count its members would cost 2 µs.
    """
    encoded = orjson.dumps(item)
    if raw is None or b"\\" in raw:
        return encoded
    return raw if raw.count(b":") == encoded.count(b":") else encoded


class Preparer:
    """Turns a dataset's batch into Kafka records, under one schema version."""

    __slots__ = (
        "_base_headers",
        "_dataset",
        "_id_prefix",
        "_max_record_bytes",
        "_topic",
        "_validator",
    )

    def __init__(
        self,
        dataset: Dataset,
        validator: Validator,
        *,
        producer: str,
        id_prefix: str,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self._dataset = dataset
        # The largest Kafka record the dataset topic takes (see ``limits``).
        self._max_record_bytes = max_record_bytes
        self._validator = validator
        self._topic = dataset.topic
        self._id_prefix = id_prefix
        # ce_id is the second header; it is replaced per record.
        self._base_headers = binary_headers(
            id="-",
            source=dataset.ce_source,
            type=dataset.ce_type,
            time=datetime.now(UTC),
            dataschema=dataset.dataschema,
            extensions={"producer": producer},
        )

    def prepare(  # noqa: PLR0912, PLR0915 - one hot loop: a call per record costs
        self,
        items: Sequence[Any],
        window: RecordIdWindow,
        now: float,
        *,
        raws: Sequence[bytes | None] | None = None,
        fallback_keys: Sequence[bytes | None] | None = None,
        fallback_ids: Sequence[str] | None = None,
    ) -> Prepared:
        out = Prepared()
        outgoing = out.outgoing
        validator = self._validator
        key_field = self._dataset.key_field
        subject_field = self._dataset.subject_field if self._dataset.personal else None
        base = self._base_headers
        topic = self._topic
        id_prefix = self._id_prefix
        max_record_bytes = self._max_record_bytes
        size_screen = max_record_bytes - SIZE_SCREEN_MARGIN
        is_known = window.is_known
        reserve = window.reserve
        reserved = out.reserved_ids
        record = OutgoingRecord
        for index, item in enumerate(items):
            if type(item) is not dict:
                out.rejections.append(_not_an_object(index, item))
                continue
            errors = validator(item)
            if errors is not None:
                out.rejections.append(Rejection(index, errors, item))
                continue

            record_id = item.get(RECORD_ID_FIELD)
            own_id = record_id is not None
            if own_id:
                if type(record_id) is int:
                    record_id = str(record_id)
                elif type(record_id) is not str or not record_id:
                    out.rejections.append(
                        Rejection(
                            index,
                            [
                                FieldError(
                                    "/id", "a record id must be a non-empty string or an integer"
                                )
                            ],
                            item,
                        )
                    )
                    continue
                if is_known(record_id, now):
                    out.duplicates += 1
                    continue
            elif fallback_ids is not None:
                record_id = fallback_ids[index]
            else:
                record_id = f"{id_prefix}{index}"

            key: bytes | None = None
            if key_field is not None:
                key_value = item.get(key_field)
                # The common case without a call; _scalar_bytes for the rest.
                key = (
                    key_value.encode()
                    if type(key_value) is str and key_value
                    else _scalar_bytes(key_value)
                )
                if key is None:
                    out.rejections.append(
                        Rejection(
                            index,
                            [
                                FieldError(
                                    f"/{key_field}",
                                    "the dataset's key field must be a string or a number",
                                )
                            ],
                            item,
                        )
                    )
                    continue
            elif fallback_keys is not None:
                key = fallback_keys[index]

            headers = base.copy()
            headers[1] = ("ce_id", record_id.encode())
            if subject_field is not None:
                subject = _scalar_bytes(item.get(subject_field))
                if subject is None:
                    out.rejections.append(
                        Rejection(
                            index,
                            [
                                FieldError(
                                    f"/{subject_field}",
                                    "a personal record needs its data-subject field",
                                )
                            ],
                            item,
                        )
                    )
                    continue
                headers.append(("ce_subject", subject))

            raw = raws[index] if raws is not None else None
            value = bytes_to_send(raw, item)
            # Inline the cheap bound of ``size_error``: most records are far below.
            if (len(value) << 2) + (len(key) if key else 0) > size_screen:
                too_large = size_error(value, key, headers, max_record_bytes)
                if too_large is not None:
                    out.rejections.append(
                        Rejection(index, [FieldError("", too_large)], item, code=RECORD_TOO_LARGE)
                    )
                    continue
            if own_id:
                reserve(record_id)
                reserved.append(record_id)
            outgoing.append(record(topic, value, key, headers))
        return out


def _scalar_bytes(value: Any) -> bytes | None:
    kind = type(value)
    if kind is str:
        return value.encode() if value else None
    if kind is int or kind is float:
        return str(value).encode()
    return None


def _not_an_object(index: int, item: Any) -> Rejection:
    if isinstance(item, OverLimit):
        return Rejection(
            index, [FieldError("", item.message)], item.payload, line=item.line, code=item.code
        )
    if isinstance(item, Malformed):
        return Rejection(index, [FieldError("", item.message)], item.text, line=item.line)
    return Rejection(index, [FieldError("", "a record must be a JSON object")], item)


def dead_letters(
    rejections: Sequence[Rejection],
    dataset: Dataset,
    *,
    producer_org_id: str | None,
    channel: Channel,
) -> list[OutgoingRecord]:
    """``RecordRejected`` events for the rejected records."""
    now = datetime.now(UTC)
    return [
        _dead_letter(rejection, dataset, producer_org_id=producer_org_id, channel=channel, now=now)
        for rejection in rejections
    ]


def _dead_letter(
    rejection: Rejection,
    dataset: Dataset,
    *,
    producer_org_id: str | None,
    channel: Channel,
    now: datetime,
) -> OutgoingRecord:
    """One dead letter. It never fails on what the record holds: a payload
    that cannot be serialized as it is is stored clipped, then as text."""

    def event(payload: Any, clean: bool = False) -> RecordRejected:
        text = _valid_text if clean else str
        return RecordRejected(
            dataset_id=dataset.dataset_id,
            slug=dataset.slug,
            producer_org_id=producer_org_id,
            channel=channel,
            payload=payload,
            errors=[
                RecordError(path=text(e.path), message=text(e.message)) for e in rejection.errors
            ],
            rejected_at=now,
            schema_version=dataset.schema_version,
            source_topic=rejection.source_topic,
            source_partition=rejection.source_partition,
            source_offset=rejection.source_offset,
            code=rejection.code,
        )

    # A raw-topic record has a position that does not change when the
    # worker retries a batch: naming the dead letter after it lets readers
    # drop the repeats of at-least-once delivery.
    stable_id = (
        f"rejected:{rejection.source_topic}-{rejection.source_partition}-{rejection.source_offset}"
        if rejection.source_topic is not None
        else None
    )
    rejected = event(_bounded(rejection.payload))
    try:
        value, headers = to_structured(rejected.to_cloudevent(id=stable_id))
    except (ValueError, TypeError, RecursionError):
        rejected = event(_as_text(rejection.payload), clean=True)
        value, headers = to_structured(rejected.to_cloudevent(id=stable_id))
    return OutgoingRecord(rejected.topic, value, rejected.key().encode(), headers)


def _valid_text(text: str) -> str:
    """``text`` without what UTF-8 cannot encode (lone surrogates)."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _bounded(payload: Any) -> Any:
    try:
        encoded = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        # Deeper than the serializer goes (or a value it refuses): keep what
        # can be shown.
        return _as_text(payload)
    if len(encoded) <= MAX_DEAD_LETTER_PAYLOAD_BYTES:
        return payload
    return _truncated(encoded)


def _truncated(encoded: bytes) -> dict[str, Any]:
    return {
        "truncated": True,
        "size_bytes": len(encoded),
        "head": encoded[:4096].decode("utf-8", errors="replace"),
    }


def _as_text(payload: Any) -> Any:
    """The payload as something any serializer takes: a bounded string, or
    the payload clipped to a few levels and shown as a string."""
    if isinstance(payload, str | bytes):
        raw = payload.encode("utf-8", errors="replace") if isinstance(payload, str) else payload
        if len(raw) <= MAX_DEAD_LETTER_PAYLOAD_BYTES:
            return raw.decode("utf-8", errors="replace")
        return _truncated(raw)
    try:
        encoded = orjson.dumps(
            clipped(payload, DEAD_LETTER_HEAD_DEPTH), option=orjson.OPT_NON_STR_KEYS
        )
    except (orjson.JSONEncodeError, TypeError):
        return {"unserializable": True}
    return _truncated(encoded)


def rejection_summary(rejections: Sequence[Rejection]) -> list[dict[str, Any]]:
    """The rejected records as the HTTP answer lists them."""
    summary = []
    for r in rejections:
        entry: dict[str, Any] = {
            "index": r.index,
            "errors": [{"path": e.path, "message": e.message} for e in r.errors],
        }
        if r.line is not None:
            entry["line"] = r.line
        if r.code is not None:
            entry["code"] = r.code
        summary.append(entry)
    return summary
