"""Checks that every query of the Grafana dashboard reads metrics the running
services really export.

A panel on a metric nobody exports stays empty, and an empty panel looks like
"nothing happened": the worst thing a dashboard can tell someone on call. So
each query's PromQL is parsed, the metric names it selects are collected, and
each must be exported by one of the processes `make up` starts (four APIs,
four stream workers), read from their /metrics. A family with `# HELP` and
`# TYPE` but no samples yet counts: its series appear with the first event.

    .venv/bin/python deploy/k8s/check_dashboard.py [--dashboard FILE] [URL ...]

Without URLs it reads http://127.0.0.1:<port>/metrics for the ports of the
Makefile (CATALOG_PORT ... NOTIFY_WORKER_PORT, same defaults). Exits 1 naming
each panel and metric no service exports, 2 when the dashboard cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser

DASHBOARD = Path(__file__).resolve().parent / "base/monitoring/grafana/datapolis.json"

# The processes of `make up`: (the Makefile's variable, its default port).
PROCESSES = (
    ("CATALOG_PORT", 8001),
    ("INGEST_PORT", 8002),
    ("CONSENT_PORT", 8003),
    ("NOTIFY_PORT", 8004),
    ("CATALOG_WORKER_PORT", 8101),
    ("INGEST_WORKER_PORT", 8102),
    ("CONSENT_WORKER_PORT", 8103),
    ("NOTIFY_WORKER_PORT", 8104),
)

# Metrics the dashboard may read although no datapolis process exports them,
# each with the reason no service metric can stand in for it.
EXTERNAL: dict[str, str] = {
    "up": (
        "Prometheus's own record of each scrape: a process that is down or hung cannot report it"
    ),
    "kafka_consumergroup_lag": (
        "Strimzi's Kafka Exporter: the services export no lag of their own; it is "
        "the broker's end offsets minus the group's committed ones"
    ),
}

# The samples a family of each type exposes, besides the family's own name.
_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("_count", "_sum", "_created"),
}
# Grafana's own variables that stand for a duration in a range selector.
_DURATIONS = {"__rate_interval", "__interval", "__range", "__auto"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.DOTALL)
_SAMPLE_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass(frozen=True)
class NameRef:
    """How one selector names its metric: exactly, or by a regular expression
    on ``__name__`` (anchored, as Prometheus does)."""

    name: str
    regex: bool = False

    def __str__(self) -> str:
        return f'{{__name__=~"{self.name}"}}' if self.regex else self.name


@dataclass(frozen=True)
class Query:
    where: str  # the panel (and its row) or the variable it belongs to
    expr: str


def without_variables(expr: str) -> str:
    """``expr`` with Grafana's variables replaced by what PromQL can parse:
    a duration for ``$__rate_interval`` and friends, the variable's name for
    the others (they stand in label values; anywhere else the name makes the
    check fail, as it should)."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in _DURATIONS:
            return "5m"
        if name.endswith(("_ms", "_s")) and name.startswith("__"):
            return "300"
        return name

    return _VARIABLE.sub(replace, expr)


def metric_names(expr: str) -> list[NameRef]:
    """The metric names the selectors of ``expr`` name, in order; a selector
    that names none (``{job="x"}``) raises ValueError, as does bad PromQL."""
    refs: list[NameRef] = []
    problems: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        found = [NameRef(node.name)] if node.name else []
        groups = [node.matchers.matchers, *node.matchers.or_matchers]
        for matcher in (m for group in groups for m in group):
            if matcher.name != "__name__":
                continue
            if matcher.op == promql_parser.MatchOp.Equal:
                found.append(NameRef(matcher.value))
            elif matcher.op == promql_parser.MatchOp.Re:
                found.append(NameRef(matcher.value, regex=True))
        if not found:
            problems.append(f"{node} selects no metric by name")
        refs.extend(ref for ref in found if ref not in refs)

    promql_parser.walk(promql_parser.parse(without_variables(expr)), visit)
    if problems:
        raise ValueError("; ".join(problems))
    return refs


def variable_expr(query: Any) -> str | None:
    """The PromQL of a query variable's definition (``label_values(expr,
    label)``, ``query_result(expr)`` or plain PromQL), None when it has none."""
    text = query.get("query") if isinstance(query, dict) else query
    if not isinstance(text, str) or not text.strip():
        return None
    for form in (_LABEL_VALUES, _QUERY_RESULT):
        match = form.match(text)
        if match:
            return match.group(1)
    return text


def queries(dashboard: Mapping[str, Any]) -> Iterator[Query]:
    """Every Prometheus query of the dashboard: panels' targets (rows'
    nested panels included) and query variables' definitions."""

    def panels(items: Iterable[Mapping[str, Any]], row: str | None) -> Iterator[Query]:
        for panel in items:
            if panel.get("type") == "row":
                # An open row's panels follow it; a collapsed row holds them.
                row = panel.get("title", "")
                yield from panels(panel.get("panels", []), row)
                continue
            where = f'panel "{panel.get("title", "")}"' + (f' (row "{row}")' if row else "")
            targets = panel.get("targets", [])
            if panel.get("type") not in {"text", "news", "dashlist"} and not targets:
                yield Query(where, "")
            for target in targets:
                yield Query(f"{where} query {target.get('refId', '?')}", target.get("expr", ""))

    yield from panels(dashboard.get("panels", []), None)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            expr = variable_expr(variable.get("query"))
            yield Query(f'variable "{variable.get("name", "")}"', expr or "")


def exported_names(exposition: str) -> set[str]:
    """Every sample name a /metrics text (Prometheus or OpenMetrics format)
    has, or would have once its families with no samples yet get one."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 3 and parts[1] in {"HELP", "TYPE"}:
                names.add(parts[2])
            if len(parts) >= 4 and parts[1] == "TYPE":
                family = parts[2].removesuffix("_total") if parts[3] == "counter" else parts[2]
                names.update(family + suffix for suffix in _SUFFIXES.get(parts[3], ()))
            continue
        match = _SAMPLE_NAME.match(line)
        if match:
            names.add(match.group())
    return names


def is_exported(ref: NameRef, exported: set[str]) -> bool:
    if not ref.regex:
        return ref.name in exported
    pattern = re.compile(ref.name)
    return any(pattern.fullmatch(name) for name in exported)


def problems_of(
    dashboard: Mapping[str, Any], exported: set[str], external: Mapping[str, str] = EXTERNAL
) -> tuple[list[str], set[str]]:
    """What is wrong with the dashboard's queries, and the external metrics
    it reads."""
    problems: list[str] = []
    used_external: set[str] = set()
    for query in queries(dashboard):
        if not query.expr.strip():
            problems.append(f"{query.where}: no query")
            continue
        try:
            refs = metric_names(query.expr)
        except ValueError as exc:
            problems.append(f"{query.where}: {exc}")
            continue
        for ref in refs:
            if not ref.regex and ref.name in external:
                used_external.add(ref.name)
            elif not is_exported(ref, exported):
                problems.append(f"{query.where}: {ref} is exported by no service")
    return problems, used_external


def default_urls(env: Mapping[str, str]) -> list[str]:
    return [
        f"http://127.0.0.1:{env.get(variable) or default}/metrics"
        for variable, default in PROCESSES
    ]


def scrape(urls: Sequence[str], timeout_s: float) -> tuple[set[str], list[str]]:
    exported: set[str] = set()
    unreachable: list[str] = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as answer:  # noqa: S310
                exported |= exported_names(answer.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            unreachable.append(f"{url}: no answer ({exc}); is the platform up (make up)?")
    return exported, unreachable


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per /metrics")
    parser.add_argument("urls", nargs="*", help="/metrics URLs (default: make up's)")
    args = parser.parse_args(argv)
    try:
        dashboard = json.loads(args.dashboard.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read the dashboard {args.dashboard}: {exc}", file=sys.stderr)
        return 2
    urls = args.urls or default_urls(os.environ)
    exported, unreachable = scrape(urls, args.timeout)
    problems, used_external = problems_of(dashboard, exported)
    problems = unreachable + problems
    for name in sorted(used_external):
        print(f"external, not checked: {name} ({EXTERNAL[name]})")
    if problems:
        print(f"{args.dashboard}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    count = sum(1 for _ in queries(dashboard))
    print(f"{args.dashboard.name}: the {count} queries read metrics {len(urls)} processes export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
