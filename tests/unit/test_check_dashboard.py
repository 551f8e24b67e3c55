"""deploy/k8s/check_dashboard.py: the metric names read out of a dashboard's
PromQL, the names a /metrics text exports, and a dashboard on a metric no
service exports failing the check.

The check itself runs in CI against the running services (.ci/run, right
after make up); these need nothing running."""

from __future__ import annotations

import http.server
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from datapolis_consent.worker import CheckpointMetrics
from datapolis_ingest.stats import records_counter
from datapolis_notify.api.stream import StreamMetrics
from datapolis_notify.delivery.metrics import DeliveryMetrics
from datapolis_notify.entitlements.feed import EntitlementFeed
from datapolis_notify.entitlements.settings import EntitlementSettings
from datapolis_notify.entitlements.view import Entitlements
from datapolis_shared.metrics import ServiceMetrics
from datapolis_shared.settings import KafkaSettings

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_dashboard", REPO / "deploy/k8s/check_dashboard.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


check = _load()


def names(expr: str) -> list[str]:
    return [str(ref) for ref in check.metric_names(expr)]


def test_a_histogram_quantile_reads_the_bucket_series_not_its_labels() -> None:
    assert names(
        "histogram_quantile(0.99, sum by (job, le) (rate("
        'datapolis_http_request_duration_seconds_bucket{namespace="$namespace", '
        'route!~"/healthz|/metrics"}[$__rate_interval])))'
    ) == ["datapolis_http_request_duration_seconds_bucket"]


def test_label_lists_and_label_values_that_look_like_metrics_are_not_metrics() -> None:
    assert names(
        "sum by (le, datapolis_ready) (rate(a_total"
        '{job="datapolis_ready", route=~"datapolis_http_requests_total|b_total"}[5m]))'
        " / on (datapolis_outbox_backlog) group_left b_seconds_count offset 5m"
    ) == ["a_total", "b_seconds_count"]
    assert names('label_replace(up, "dst", "$1", "src", "(datapolis_.*)")') == ["up"]


def test_name_matchers_are_metric_names_and_selectors_without_one_are_refused() -> None:
    assert names('{__name__="a_total", job="x"} or max_over_time(b[5m:1m])') == ["a_total", "b"]
    assert names('count({__name__=~"datapolis_notify_.+"})') == [
        '{__name__=~"datapolis_notify_.+"}'
    ]
    with pytest.raises(ValueError, match="selects no metric by name"):
        check.metric_names('sum(rate({job="notify-worker"}[5m]))')
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        check.metric_names("sum(rate(a_total[5m])")


def test_grafana_variables_are_replaced_before_parsing() -> None:
    assert names(
        'rate(a_total{namespace="$namespace", pod=~"${pod:regex}", x="[[x]]"}[$__rate_interval])'
        " * $__range_s"
    ) == ["a_total"]
    # A variable where a metric name belongs cannot be checked: refused.
    assert names("rate($metric[5m])") == ["metric"]


def test_exported_names_include_families_with_no_samples_yet() -> None:
    # Labelled families without children expose # HELP and # TYPE only.
    exported = check.exported_names(generate_latest(ServiceMetrics("x").registry).decode())
    assert {
        "datapolis_http_requests_total",
        "datapolis_http_request_duration_seconds_bucket",
        "datapolis_http_request_duration_seconds_count",
        "datapolis_outbox_backlog",
        "datapolis_events_consumed_total",
    } <= exported
    assert "datapolis_http_requests" not in exported
    assert "datapolis_outbox_backlog_total" not in exported
    # OpenMetrics names a counter's family without _total.
    metrics = ServiceMetrics("x")
    metrics.http_requests.labels("GET", "/x", "200").inc()
    openmetrics = check.exported_names(generate_openmetrics(metrics.registry).decode())
    assert "datapolis_http_requests_total" in openmetrics
    assert check.is_exported(check.NameRef("datapolis_outbox_.+", regex=True), openmetrics)
    assert not check.is_exported(check.NameRef("datapolis_outbox", regex=True), openmetrics)


def _dashboard(*exprs: str) -> dict[str, Any]:
    return {
        "panels": [
            {"type": "row", "title": "Ingest", "panels": []},
            {
                "type": "timeseries",
                "title": "Records",
                "targets": [{"refId": chr(65 + i), "expr": expr} for i, expr in enumerate(exprs)],
            },
        ],
        "templating": {
            "list": [
                {"type": "datasource", "name": "datasource", "query": "prometheus"},
                {
                    "type": "query",
                    "name": "namespace",
                    "query": {"query": "label_values(datapolis_ready, namespace)"},
                },
            ]
        },
    }


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = generate_latest(ServiceMetrics("x").registry)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def metrics_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def _run(
    tmp_path: Path, dashboard: dict[str, Any], *urls: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    file = tmp_path / "dashboard.json"
    file.write_text(json.dumps(dashboard))
    code = check.main(["--dashboard", str(file), *urls])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_panel_on_a_made_up_metric_fails_naming_panel_and_metric(
    tmp_path: Path, metrics_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    real = 'sum by (status) (rate(datapolis_http_requests_total{status=~"5.."}[5m]))'
    made_up = "sum(rate(datapolis_ingest_records_total[5m]))"
    code, output = _run(tmp_path, _dashboard(real, made_up), metrics_url, capsys=capsys)
    assert code == 1
    assert (
        'panel "Records" (row "Ingest") query B: '
        "datapolis_ingest_records_total is exported by no service"
    ) in output
    assert "query A" not in output

    code, output = _run(tmp_path, _dashboard(real), metrics_url, capsys=capsys)
    assert code == 0, output


def test_external_metrics_are_named_with_their_reason_and_others_are_not_excused(
    tmp_path: Path, metrics_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lag = 'sum(kafka_consumergroup_lag{consumergroup=~"datapolis-.+"})'
    code, output = _run(tmp_path, _dashboard(lag), metrics_url, capsys=capsys)
    assert code == 0, output
    assert "external, not checked: kafka_consumergroup_lag (Strimzi's Kafka Exporter" in output

    code, output = _run(
        tmp_path, _dashboard("kafka_consumergroup_members"), metrics_url, capsys=capsys
    )
    assert code == 1
    assert "kafka_consumergroup_members is exported by no service" in output


def test_a_service_not_answering_fails_the_check(
    tmp_path: Path, metrics_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = _run(
        tmp_path,
        _dashboard("datapolis_ready"),
        metrics_url,
        "http://127.0.0.1:9/metrics",
        capsys=capsys,
    )
    assert code == 1
    assert "http://127.0.0.1:9/metrics: no answer" in output


def test_the_default_urls_follow_the_makefiles_port_variables() -> None:
    urls = check.default_urls({"NOTIFY_WORKER_PORT": "9214"})
    assert len(urls) == 8
    assert urls[0] == "http://127.0.0.1:8001/metrics"
    assert urls[-1] == "http://127.0.0.1:9214/metrics"


def test_the_dashboard_reads_only_metrics_the_code_defines_or_listed_externals() -> None:
    # The same check as CI's against the running services, on the metrics
    # the code registers: it catches a typo before anything runs.
    service = ServiceMetrics("notify")
    DeliveryMetrics(service.registry)
    StreamMetrics(service.registry)
    EntitlementFeed(Entitlements(), KafkaSettings(), EntitlementSettings(), metrics=service)
    consent = ServiceMetrics("consent")
    CheckpointMetrics(consent)
    ingest = ServiceMetrics("ingest")
    records_counter(ingest.registry)
    exported = set()
    for registry in (service.registry, consent.registry, ingest.registry):
        exported |= check.exported_names(generate_latest(registry).decode())
    dashboard = json.loads(check.DASHBOARD.read_text())
    problems, external = check.problems_of(dashboard, exported)
    assert problems == []
    assert external == set(check.EXTERNAL)
    # Every panel queries Prometheus through the dashboard's variable.
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
