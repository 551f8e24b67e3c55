"""Kafka on aiokafka, one module per concern: client options (TLS, SASL), the
producer, topic provisioning, dead letters and the consumer loop every
service uses. The names below are the package's public surface.
"""

from datapolis_shared.kafka.admin import (
    TopicChanges,
    TopicSpec,
    admin_client,
    control_topic_specs,
    converge_topics,
    ensure_topics,
    topic_config_update,
    topic_max_message_bytes,
)
from datapolis_shared.kafka.consumer import (
    CONSUMED_OUTCOMES,
    TRANSIENT_ERRORS,
    BatchHandler,
    ConsumerLoop,
    Dependency,
    Handler,
    Park,
    RetryPolicy,
)
from datapolis_shared.kafka.deadletters import DEAD_LETTERS, dead_letter_record
from datapolis_shared.kafka.options import client_options
from datapolis_shared.kafka.producer import (
    DEFAULT_MAX_REQUEST_SIZE,
    FATAL_PRODUCER_ERRORS,
    RECORD_TOO_LARGE,
    OutgoingRecord,
    Producer,
    record_size,
)

__all__ = [
    "CONSUMED_OUTCOMES",
    "DEAD_LETTERS",
    "DEFAULT_MAX_REQUEST_SIZE",
    "FATAL_PRODUCER_ERRORS",
    "RECORD_TOO_LARGE",
    "TRANSIENT_ERRORS",
    "BatchHandler",
    "ConsumerLoop",
    "Dependency",
    "Handler",
    "OutgoingRecord",
    "Park",
    "Producer",
    "RetryPolicy",
    "TopicChanges",
    "TopicSpec",
    "admin_client",
    "client_options",
    "control_topic_specs",
    "converge_topics",
    "dead_letter_record",
    "ensure_topics",
    "record_size",
    "topic_config_update",
    "topic_max_message_bytes",
]
