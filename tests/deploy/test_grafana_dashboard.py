"""The Grafana dashboard shows every metric the service exports, and its panels compute what their titles
say: each checked expression is evaluated by ``promtool test rules`` on series as a replica exports them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import require_binary, require_module, run
from deploy_queries import DASHBOARD, dashboard_queries, grafana_to_promql, selectors

# Sample names a family of each type exposes (prometheus_client's family names carry no _total).
_SAMPLES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported_families(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, ...]]:
    """Each ``vocos_`` family a GPU replica serving one model exports, with its sample names."""
    torch = require_module("torch", "torch")
    metrics_module = require_module("service.runtime.metrics", "the service package")
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    metrics = metrics_module.ServiceMetrics()
    metrics.set_model("mel", "mel", "local:mel", "cuda:0", "float32")
    metrics.watch_devices(["cuda:0"])
    return {family.name: tuple(family.name + suffix for suffix in _SAMPLES[family.type])
            for family in metrics.registry.collect() if family.name.startswith("vocos_")}


def test_every_exported_metric_is_on_a_panel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream outcomes, input warnings, stream steps and the served models were on no panel: a stream failing
    for every client showed nowhere (the 5xx rate counts HTTP requests only)."""
    shown = set().union(*(selectors(expr) for where, expr in dashboard_queries() if where.startswith("panel")))
    families = exported_families(monkeypatch)
    assert len(families) > 20
    missing = sorted(name for name, samples in families.items() if not shown & set(samples))
    assert not missing, f"exported but on no panel: {missing}"


def _panel_exprs(title: str) -> list[str]:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"] == title]
    assert len(panels) == 1, f"no single panel titled {title!r}"
    return [grafana_to_promql(target["expr"]) for target in panels[0]["targets"]]


def _counter(series: str, per_minute: float) -> dict[str, str]:
    return {"series": series, "values": f"0+{per_minute}x20"}


def _histogram(name: str, model: str, per_minute: dict[str, float]) -> list[dict[str, str]]:
    """Cumulative ``_bucket`` series growing by ``per_minute[le]`` observations each minute."""
    return [_counter(f'{name}_bucket{{model="{model}",le="{le}"}}', count) for le, count in per_minute.items()]


def _evaluate(tmp_path: Path, series: list[dict[str, str]], checks: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Fail unless each ``(expr, samples)`` gives exactly ``samples`` at minute 20 of ``series``."""
    promtool = require_binary("promtool")
    spec = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{"expr": expr, "eval_time": "20m", "exp_samples": samples} for expr, samples in checks],
    }]}
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run([promtool, "test", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_streams_ended_by_outcome_is_a_rate_per_transport_and_outcome(tmp_path: Path) -> None:
    (expr,) = _panel_exprs("Streams ended by outcome")
    series = [_counter('vocos_streams_total{model="mel",transport="websocket",outcome="ok"}', 60),
              _counter('vocos_streams_total{model="tts",transport="websocket",outcome="ok"}', 30),
              _counter('vocos_streams_total{model="mel",transport="http",outcome="disconnected"}', 6)]
    _evaluate(tmp_path, series, [(expr, [
        {"labels": '{transport="websocket",outcome="ok"}', "value": 1.5},
        {"labels": '{transport="http",outcome="disconnected"}', "value": 0.1},
    ])])


def test_stream_steps_show_the_mean_streams_per_step_and_the_real_time_factor_p99(tmp_path: Path) -> None:
    mean, rtf = _panel_exprs("Stream steps and real-time factor")
    series = [_counter('vocos_stream_batch_size_sum{model="mel"}', 180),  # a step a second, of 3 streams
              _counter('vocos_stream_batch_size_count{model="mel"}', 60),
              *_histogram("vocos_stream_realtime_factor", "mel", {"0.1": 0, "0.2": 10, "+Inf": 10})]
    _evaluate(tmp_path, series, [(mean, [{"labels": '{model="mel"}', "value": 3}]),
                                 (rtf, [{"labels": '{model="mel"}', "value": 0.199}])])


def test_input_warnings_are_a_rate_by_model_and_cause(tmp_path: Path) -> None:
    (expr,) = _panel_exprs("Input warnings")
    series = [_counter('vocos_input_warnings_total{model="mel",cause="log10"}', 12)]
    _evaluate(tmp_path, series, [(expr, [{"labels": '{model="mel",cause="log10"}', "value": 0.2}])])


def test_served_models_counts_the_replicas_serving_each(tmp_path: Path) -> None:
    (expr,) = _panel_exprs("Served models")
    labels = 'model="mel",kind="mel",source="local:m",device="cpu",dtype="float32",cpu_matmul="mkl"'
    series = [{"series": f'vocos_model_info{{{labels},instance="a"}}', "values": "1x20"},
              {"series": f'vocos_model_info{{{labels},instance="b"}}', "values": "1x20"}]
    _evaluate(tmp_path, series, [(expr, [{"labels": f"{{{labels}}}", "value": 2}])])
