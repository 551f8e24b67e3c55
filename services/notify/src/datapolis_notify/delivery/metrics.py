"""The engine's metrics: bounded labels (channel, outcome, reason, state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("delivered", "retry", "dead", "withheld", "gone")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 300, 3600)


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.deliveries = Counter(
            "datapolis_notify_deliveries_total",
            "Delivery attempts by channel and outcome (a message of one or more records)",
            ["channel", "outcome"],
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "datapolis_notify_attempt_seconds",
            "Duration of one delivery attempt, by channel",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "datapolis_notify_queue_depth",
            "Messages in the durable delivery queue, by state (waiting, dead)",
            ["state"],
            registry=registry,
        )
        self.withheld = Counter(
            "datapolis_notify_withheld_records_total",
            "Records not delivered because the consumer was not entitled at the attempt",
            ["reason"],
            registry=registry,
        )
        self.lag_seconds = Histogram(
            "datapolis_notify_record_to_delivery_seconds",
            "From a record's Kafka timestamp to its delivery, by channel",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        for channel in ("webhook", "kafka"):
            for outcome in OUTCOMES:
                self.deliveries.labels(channel, outcome)
        for state in ("waiting", "dead"):
            self.queue_depth.labels(state)
