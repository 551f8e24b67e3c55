"""Every alert in deploy/k8s rests on series that exist and that a test shows
moving under the alert's condition.

An alert on a metric nobody sets (as ``datapolis_outbox_backlog`` once was)
never fires. So each series an alert reads is listed here with the tests that
make it move, and a new alert on an unlisted series fails this test until
someone writes one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from datapolis_ingest.stats import records_counter
from datapolis_notify.delivery.metrics import DeliveryMetrics
from datapolis_notify.entitlements.feed import EntitlementFeed
from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.entitlements.view import Entitlements
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.settings import KafkaSettings

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/k8s/base/monitoring/prometheus-rules.yaml"

_METRICS = "tests/integration/test_metrics.py::"
_ENTITLEMENTS = "tests/integration/notify/entitlements/test_entitlement_feed.py::"
PROVEN: dict[str, list[str]] = {
    # Prometheus sets up=0 when a target's /metrics does not answer: these
    # show every API and every stream worker answering it.
    "up": [
        "tests/e2e/test_platform.py::test_services_follow_kafka_readiness",
        "tests/e2e/test_workers.py::test_workers_serve_probes_and_metrics",
    ],
    "datapolis_ready": [_METRICS + "test_ready_gauge_falls_when_the_service_cannot_do_its_job"],
    "datapolis_http_requests_total": [
        _METRICS + "test_server_errors_are_counted_by_route_template"
    ],
    "datapolis_outbox_oldest_unpublished_age_seconds": [
        _METRICS + "test_outbox_backlog_and_age_rise_while_unpublished_then_drain"
    ],
    "datapolis_outbox_backlog": [
        _METRICS + "test_outbox_backlog_and_age_rise_while_unpublished_then_drain"
    ],
    # Ingest's records by outcome, whichever channel they came by.
    "datapolis_ingest_records_total": [
        "tests/integration/ingest/test_http_ingest.py::test_batch_counts_reach_the_ingest_events",
        "tests/unit/ingest/test_stats.py::"
        "test_a_failed_flush_keeps_its_counts_without_counting_twice",
    ],
    # The Kafka Exporter reports topics' end offsets and groups' committed
    # offsets: these show records landing on the topics the alerts name
    # (datapolis.deadletters) and a
    # datapolis-<service>-<consumer> group committing its progress.
    "kafka_topic_partition_current_offset": [
        "tests/integration/test_consumers.py::test_bad_record_is_dead_lettered_and_good_ones_pass",
    ],
    "kafka_consumergroup_current_offset": [
        "tests/integration/ingest/test_raw_worker.py::"
        "test_raw_records_are_validated_forwarded_and_committed"
    ],
    # The notify worker's deliveries by channel and outcome.
    "datapolis_notify_deliveries_total": [
        "tests/integration/notify/delivery/test_retries.py::"
        "test_a_message_whose_retries_are_exhausted_is_dead"
    ],
    "kafka_consumergroup_lag": [
        "tests/integration/ingest/test_raw_worker.py::"
        "test_raw_records_are_validated_forwarded_and_committed"
    ],
    # notify's entitlement view: ends applied within the bound (counted per
    # bucket), and how long ago it proved it was current.
    "datapolis_entitlement_end_applied_seconds_count": [
        _ENTITLEMENTS
        + "test_grants_are_entitled_and_refused_within_1s_of_a_withdraw_or_revoke_answer"
    ],
    "datapolis_entitlement_end_applied_seconds_bucket": [
        _ENTITLEMENTS
        + "test_grants_are_entitled_and_refused_within_1s_of_a_withdraw_or_revoke_answer"
    ],
    "datapolis_entitlements_seconds_since_caught_up": [
        _ENTITLEMENTS
        + "test_grants_are_entitled_and_refused_within_1s_of_a_withdraw_or_revoke_answer"
    ],
}
# Series no test here can move, and why.
UNPROVABLE: dict[str, str] = {
    "kafka_topic_partition_under_replicated_partition": (
        "a partition is under-replicated only on a cluster of several brokers; "
        "the local stack and its tests run one"
    ),
}

# PromQL words that are not series names.
_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "sum", "min", "max", "avg", "count", "rate", "irate", "increase",
    "delta", "deriv", "min_over_time", "max_over_time", "avg_over_time", "absent",
}  # fmt: skip


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


def series_of(expr: str) -> set[str]:
    """The series names an expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # ranges
    words = set(re.findall(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return words - _PROMQL_WORDS


def _test_exists(node: str) -> bool:
    path, _, name = node.partition("::")
    file = REPO / path
    return file.is_file() and re.search(rf"\bdef {re.escape(name)}\(", file.read_text()) is not None


def test_series_are_read_from_expressions() -> None:
    assert series_of(
        'sum by (namespace, job) (rate(datapolis_http_requests_total{status=~"5.."}[5m]))'
        " / sum by (job) (rate(up[5m])) > 0.02 and on (pod) kafka_x == 0"
    ) == {"datapolis_http_requests_total", "up", "kafka_x"}


def test_every_alert_rests_on_series_a_test_moves() -> None:
    alerts = _alerts()
    assert alerts
    for alert in alerts:
        series = series_of(alert["expr"])
        assert series, alert["alert"]
        for name in series:
            assert name in PROVEN or name in UNPROVABLE, (
                f"alert {alert['alert']} reads {name}, which no test shows moving"
            )
    for name, tests in PROVEN.items():
        for node in tests:
            assert _test_exists(node), f"{name}: no test {node}"


def test_the_services_series_the_alerts_read_are_exported() -> None:
    registry = ServiceMetrics("any").registry
    DeliveryMetrics(registry)  # the notify worker's, on the same registry
    records_counter(registry)  # the ingest API's and worker's
    metrics = ServiceMetrics("notify")
    EntitlementFeed(Entitlements(), KafkaSettings(), EntitlementSettings(), metrics=metrics)
    exported = set()
    for family in [*registry.collect(), *metrics.registry.collect()]:
        exported.add(family.name)
        if family.type == "counter":
            exported.add(family.name + "_total")
        if family.type == "histogram":
            exported.update(family.name + suffix for suffix in ("_count", "_bucket", "_sum"))
    read = {name for alert in _alerts() for name in series_of(alert["expr"])}
    own = {name for name in read if name.startswith("datapolis_")}
    assert own
    assert own <= exported
