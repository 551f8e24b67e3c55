"""Dead letters: where a record that cannot be processed is parked, with
where it came from and why, so the partition it came from moves on."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from datapolis_shared.kafka.producer import OutgoingRecord

DEAD_LETTERS = "datapolis.deadletters"


def dead_letter_record(
    record: ConsumerRecord[bytes, bytes], *, consumer: str, error: str
) -> OutgoingRecord:
    headers = list(record.headers or ())
    headers += [
        ("dl_consumer", consumer.encode()),
        ("dl_error", error[:2000].encode()),
        ("dl_source_topic", record.topic.encode()),
        ("dl_source_partition", str(record.partition).encode()),
        ("dl_source_offset", str(record.offset).encode()),
    ]
    return OutgoingRecord(DEAD_LETTERS, record.value or b"", record.key, headers)
