"""Dead letters: where a record that cannot be processed is parked, with
where it came from and why, so the partition it came from moves on.

A dead letter must always be writable, whatever the record was: a value, key
or headers too large for the dead-letter topic are cut (the header
``dl_truncated`` says what was cut and how large it was), never refused.
"""

from __future__ import annotations

from aiokafka import ConsumerRecord

from datapolis_shared.kafka.producer import OutgoingRecord

DEAD_LETTERS = "datapolis.deadletters"
# Kept of a record's value and of its key; the rest is cut, so a dead letter
# always fits the topic's default max.message.bytes (1 MiB).
MAX_DEAD_LETTER_VALUE_BYTES = 256 * 1024
MAX_DEAD_LETTER_KEY_BYTES = 16 * 1024
MAX_DEAD_LETTER_HEADERS_BYTES = 64 * 1024


def dead_letter_record(
    record: ConsumerRecord[bytes, bytes], *, consumer: str, error: str
) -> OutgoingRecord:
    value = record.value or b""
    key = record.key
    original = list(record.headers or ())
    truncated: list[str] = []
    if len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
        truncated.append(f"value:{len(value)}")
        value = value[:MAX_DEAD_LETTER_VALUE_BYTES]
    if key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
        truncated.append(f"key:{len(key)}")
        key = key[:MAX_DEAD_LETTER_KEY_BYTES]
    headers_size = sum(len(name) + len(v or b"") for name, v in original)
    if headers_size > MAX_DEAD_LETTER_HEADERS_BYTES:
        truncated.append(f"headers:{headers_size}")
        original = []
    headers = [
        *original,
        ("dl_consumer", consumer.encode()),
        ("dl_error", error[:2000].encode("utf-8", errors="replace")),
        ("dl_source_topic", record.topic.encode()),
        ("dl_source_partition", str(record.partition).encode()),
        ("dl_source_offset", str(record.offset).encode()),
    ]
    if truncated:
        headers.append(("dl_truncated", ",".join(truncated).encode()))
    return OutgoingRecord(DEAD_LETTERS, value, key, headers)
