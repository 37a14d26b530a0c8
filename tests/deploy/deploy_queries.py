"""The PromQL the deployment sends: dashboard panels and variables, alert rules, adapter rules.

``all_queries()`` lists them as Prometheus would receive them; ``selectors(expr)`` parses one with a
real PromQL parser and returns the metric names it selects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from deploy_helpers import KUBERNETES, REPO, load_yaml, require_module

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "vocos-serve.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ADAPTER = KUBERNETES / "prometheus-adapter" / "values.yaml"


def selectors(expr: str) -> set[str]:
    """Metric names of every vector selector in ``expr`` (parsed, so functions and labels never count)."""
    promql = require_module("promql_parser", "promql-parser (PyPI)")
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            name = node.name or _name_matcher(str(node.matchers))
            assert name, f"selector without a metric name in {expr!r}"
            names.add(name)

    promql.walk(promql.parse(expr), visit)
    return names


def _name_matcher(matchers: str) -> str | None:
    match = re.search(r'__name__="(\w+)"', matchers)
    return match.group(1) if match else None


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables by values Prometheus would see."""
    expr = re.sub(r"\$__\w*interval\w*", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def dashboard_queries() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", grafana_to_promql(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert inner, f"variable {variable['name']}: unexpected query {query!r}"
            yield f"variable {variable['name']!r}", inner.group(1)


def _alert_queries() -> Iterator[tuple[str, str]]:
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]


def _adapter_queries() -> Iterator[tuple[str, str]]:
    for rule in load_yaml(ADAPTER)["rules"]["custom"]:
        yield "adapter seriesQuery", rule["seriesQuery"]
        series = rule["seriesQuery"].split("{", 1)[0]
        # The adapter fills these templates per request; any concrete values give the query it sends.
        query = (rule["metricsQuery"].replace("<<.Series>>", series)
                 .replace("<<.LabelMatchers>>", 'namespace="vocos-serve",pod=~"vocos-serve-.*"')
                 .replace("<<.GroupBy>>", "pod"))
        yield "adapter metricsQuery", query


def all_queries() -> list[tuple[str, str]]:
    return [*dashboard_queries(), *_alert_queries(), *_adapter_queries()]
