"""The alert rules fire on the situations they name, and not on normal traffic (``promtool test rules``).

Each case feeds promtool the series a replica exports (names and labels as /metrics has them) over half
an hour, sampled every 15 s as the ServiceMonitor scrapes, and states which alerts must fire at its end.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import REPO, require_binary, require_module, run

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
TARGET = {"job": "vocos-serve", "instance": "10.0.0.7:8000"}
STEPS = 120  # samples 15 s apart: 30 minutes
# Every alert of the file: a case names those that fire at its end; the others must not.
NAMES = ("VocosHigh5xxRate", "VocosHighP99Latency", "VocosConnectionsRefused", "VocosStreamsRefused",
         "VocosQueueSaturated", "VocosQueueFull", "VocosNotReady", "VocosDown", "VocosAbsent")
LATENCY_BUCKETS = ("0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf")


def _labels(name: str, **labels: str) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in {**TARGET, **labels}.items())
    return f"{name}{{{body}}}"


def _counter(name: str, per_step: float, **labels: str) -> dict[str, str]:
    """A counter from 0 that grows by ``per_step`` every sample (0: it stays at 0, as a series made at start)."""
    return {"series": _labels(name, **labels), "values": f"0+{per_step}x{STEPS}"}


def _gauge(name: str, value: float, **labels: str) -> dict[str, str]:
    return {"series": _labels(name, **labels), "values": f"{value}x{STEPS}"}


def _latency(per_step: float, seconds: float) -> list[dict[str, str]]:
    """``per_step`` requests every sample, each of ``seconds``, as vocos_request_duration_seconds_bucket."""
    return [_counter("vocos_request_duration_seconds_bucket", per_step if seconds <= float(le) else 0,
                     endpoint="/decode/mel", le=le) for le in LATENCY_BUCKETS]


def replica(*, ok: float = 50, status: dict[str, float] | None = None, seconds: float = 0.2, queue: float = 0,
            ready: float = 1, up: float = 1, conn_refused: float = 0,
            streams_refused: float = 0, scraped: bool = True) -> list[dict[str, str]]:
    """One replica's series: ``ok`` 200s per sample taking ``seconds`` each, ``status``: more per sample by
    status code (the 429/500/503/504 series exist from the start, at 0, as the service makes them);
    none at all when it is not ``scraped`` (no target: not even ``up``)."""
    if not scraped:
        return []
    counts = {"429": 0.0, "500": 0.0, "503": 0.0, "504": 0.0, **(status or {})}
    series = [_counter("vocos_requests_total", ok, endpoint="/decode/mel", status="200")]
    series += [_counter("vocos_requests_total", n, endpoint="/decode/mel", status=code) for code, n in counts.items()]
    series += _latency(ok, seconds)
    series += [_gauge("vocos_queue_depth", queue, model="mel"), _gauge("vocos_ready", ready),
               _counter("vocos_connections_refused_total", conn_refused),
               _counter("vocos_streams_refused_total", streams_refused, endpoint="/stream/mel", status="503"),
               {"series": _labels("up"), "values": f"{up}x{STEPS}"}]
    return series


CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "normal traffic": ({}, set()),
    "idle": ({"ok": 0}, set()),
    "5xx above 5 %": ({"status": {"503": 5}}, {"VocosHigh5xxRate"}),
    "a few 5xx": ({"status": {"500": 1}}, set()),
    "slow requests": ({"seconds": 4.0}, {"VocosHighP99Latency"}),
    "connections refused": ({"conn_refused": 2}, {"VocosConnectionsRefused"}),
    "streams refused": ({"streams_refused": 1}, {"VocosStreamsRefused"}),
    "queue past 200": ({"queue": 230, "status": {"429": 1}}, {"VocosQueueSaturated", "VocosQueueFull"}),
    # A queue limit at or below 200 (VOCOS_MAX_QUEUE_SIZE, a model's max_queue_size), or the resynthesis
    # audio-analysis queue that vocos_queue_depth leaves out: full all the time, its depth never past 200.
    "queue full at a limit of 64": ({"queue": 64, "status": {"429": 20}}, {"VocosQueueFull"}),
    "a rare 429": ({"queue": 16, "status": {"429": 0.2}}, set()),
    "not ready": ({"ready": 0, "ok": 0}, {"VocosNotReady"}),
    "down": ({"up": 0}, {"VocosDown"}),
    "no replica scraped": ({"scraped": False}, {"VocosAbsent"}),
}


def _test_file(rules: Path) -> dict[str, Any]:
    tests = []
    for case, (kwargs, firing) in CASES.items():
        tests.append({
            "name": case,
            "interval": "15s",
            "input_series": replica(**kwargs),
            "alert_rule_test": [
                {"eval_time": "29m", "alertname": name,
                 "exp_alerts": [{"exp_labels": _expected_labels(name)}]
                 if name in firing else []}
                for name in NAMES
            ],
        })
    return {"rule_files": [rules.name], "evaluation_interval": "15s", "tests": tests}


def _expected_labels(name: str) -> dict[str, str]:
    """The labels an alert carries: the ones its expression keeps, plus its rule's own."""
    rules = [r for group in yaml.safe_load(ALERTS.read_text())["groups"] for r in group["rules"] if r["alert"] == name]
    rule = rules[0] if rules else {}
    kept = {"VocosHigh5xxRate": {"job": TARGET["job"]}, "VocosAbsent": {"job": TARGET["job"]},
            "VocosHighP99Latency": {"job": TARGET["job"], "endpoint": "/decode/mel"},
            "VocosQueueSaturated": {**TARGET, "model": "mel"}}.get(name, TARGET)
    return {**kept, **rule.get("labels", {})}


def test_every_alert_rule_has_a_case() -> None:
    rules = {r["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for r in group["rules"]}
    assert rules == set(NAMES)
    assert set().union(*(firing for _, firing in CASES.values())) == rules


def test_every_status_an_alert_selects_exists_from_the_start() -> None:
    """rate() takes a series' first sample for its start: a status counted on a series that first appears with
    it would move no alert, so the service makes each one an alert selects at 0."""
    metrics = require_module("service.runtime.metrics", "the service package")
    text = metrics.ServiceMetrics().render()[0].decode()
    statuses = set(re.findall(r'vocos_requests_total\{status="(\d+)"\}', ALERTS.read_text()))
    assert "429" in statuses
    for status in statuses:
        assert f'endpoint="/decode/mel",status="{status}"}} 0.0' in text, status


def _write_rules_without_annotations(path: Path) -> None:
    """The alert rules at ``path`` without their annotations, which quote $value: an alert is matched by its labels
    alone."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path.write_text(yaml.safe_dump({"groups": groups}))


@pytest.mark.parametrize("case", list(CASES))
def test_alerts_fire_on_their_situation_only(case: str, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    _write_rules_without_annotations(tmp_path / ALERTS.name)
    spec = _test_file(tmp_path / ALERTS.name)
    spec["tests"] = [t for t in spec["tests"] if t["name"] == case]
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run([promtool, "test", "rules", str(tmp_path / "alerts_test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


# Two namespaces that one Prometheus scrapes, as the Kubernetes scrape labels them.
PRODUCTION = {"job": "vocos-serve", "namespace": "vocos-prod", "pod": "vocos-serve-a", "instance": "10.0.0.7:8000"}
STAGING = {"job": "vocos-serve", "namespace": "vocos-staging", "pod": "vocos-serve-b", "instance": "10.0.1.9:8000"}


def _series(name: str, target: dict[str, str], values: str, **labels: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in {**target, **labels}.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _namespaced_replica(target: dict[str, str], ok: float, failed: float, ready: float) -> list[dict[str, str]]:
    """One replica's series: ``ok`` 200s and ``failed`` 503s per sample, and its readiness."""
    return [
        _series("vocos_requests_total", target, f"0+{ok}x{STEPS}", endpoint="/decode/mel", status="200"),
        _series("vocos_requests_total", target, f"0+{failed}x{STEPS}", endpoint="/decode/mel", status="503"),
        _series("vocos_requests_total", target, f"0+0x{STEPS}", endpoint="/decode/mel", status="429"),
        _series("vocos_ready", target, f"{ready}x{STEPS}"),
    ]


NAMESPACED = {
    # Half of staging's requests fail: summed with production's traffic into one ratio (2 %), it never alerted.
    "5xx in one namespace": (
        {"staging": (10, 10, 1)},
        {"VocosHigh5xxRate": {"job": "vocos-serve", "namespace": "vocos-staging", "severity": "critical"}},
    ),
    # Alertmanager routes on the namespace: an alert without it reaches no team's receiver.
    "a replica not ready in one namespace": (
        {"staging": (0, 0, 0)},
        {"VocosNotReady": {**STAGING, "severity": "critical"}},
    ),
}


@pytest.mark.parametrize("case", list(NAMESPACED))
def test_alerts_keep_each_namespace_apart(case: str, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    _write_rules_without_annotations(tmp_path / ALERTS.name)
    overrides, firing = NAMESPACED[case]
    staging = overrides.get("staging", (50, 0, 1))
    series = _namespaced_replica(PRODUCTION, 500, 0, 1) + _namespaced_replica(STAGING, *staging)
    checked = ("VocosHigh5xxRate", "VocosNotReady", "VocosQueueFull")
    tests = [{
        "name": case,
        "interval": "15s",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": "29m", "alertname": name,
             "exp_alerts": [{"exp_labels": firing[name]}] if name in firing else []}
            for name in checked
        ],
    }]
    spec = {"rule_files": [ALERTS.name], "evaluation_interval": "15s", "tests": tests}
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run([promtool, "test", "rules", str(tmp_path / "alerts_test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
