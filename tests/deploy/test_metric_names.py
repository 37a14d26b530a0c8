"""Every metric the dashboard, the alerts and the autoscaler query is one the service really exports.

The exported names come from a running app's ``/metrics`` (a tiny random mel model, after one real
request) plus the metrics object of a GPU replica; the queried names come from parsing each PromQL
expression with a real PromQL parser.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import KUBERNETES, REPO, load_yaml, require_module
from deploy_queries import ADAPTER, all_queries, dashboard_queries, selectors

# Series Prometheus itself attaches to every scrape target; no exporter defines them.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# The metrics the interface contract promises, as sample names.
CONTRACT = (
    "vocos_requests_total", "vocos_request_duration_seconds_bucket", "vocos_queue_wait_seconds_bucket",
    "vocos_compute_seconds_bucket", "vocos_batch_size_bucket", "vocos_padding_ratio_bucket",
    "vocos_queue_depth", "vocos_inflight_requests", "vocos_audio_seconds_total", "vocos_model_info",
    "vocos_ready", "vocos_device_memory_bytes",
)
# Sample names each metric type exposes (text format 0.0.4, as prometheus_client writes it).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def series_names(exposition: str) -> set[str]:
    """Every sample name the exposition declares (by family type) or carries."""
    parser = require_module("prometheus_client.parser", "prometheus-client")
    names = set()
    for family in parser.text_string_to_metric_families(exposition):
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.fixture(scope="module")
def exported(mel_checkpoint: Path) -> set[str]:
    app_module = require_module("service.http.app", "the service package")
    settings_module = require_module("service.settings", "the service package")
    metrics_module = require_module("service.runtime.metrics", "the service package")
    testclient = require_module("fastapi.testclient", "fastapi")
    with pytest.MonkeyPatch.context() as patch:  # no VOCOS_* of the shell running pytest (API keys...)
        for name in [n for n in os.environ if n.startswith("VOCOS_")]:
            patch.delenv(name)
        settings = settings_module.Settings(mel_model=str(mel_checkpoint), encodec_model="none", device="cpu")
    with testclient.TestClient(app_module.create_app(settings)) as client:
        _wait_ready(client)
        response = client.post("/decode/mel", json={"mel": [[0.0] * 8 for _ in range(100)]})
        assert response.status_code == 200, response.text
        text = client.get("/metrics").text
    # A GPU replica also exports device memory; render that metrics object as a GPU replica would.
    gpu_metrics = metrics_module.ServiceMetrics()
    gpu_metrics.watch_devices(["cuda:0"])
    gpu_text = gpu_metrics.render()[0].decode()
    return series_names(text) | series_names(gpu_text)


def _wait_ready(client: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the app did not become ready"
        time.sleep(0.05)


def test_selector_extraction_sees_only_metric_names() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, model) (rate(a_bucket{model=~"x"}[5m]))) '
            '/ scalar(sum(b_total offset 5m)) or {__name__="c"} > bool 1')
    assert selectors(expr) == {"a_bucket", "b_total", "c"}


def test_dashboard_covers_the_required_panels() -> None:
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for metric in ("vocos_audio_seconds_total", "vocos_request_duration_seconds_bucket", "vocos_batch_size_",
                   "vocos_queue_depth", "vocos_padding_ratio_", 'status=~"5.."'):
        assert metric in exprs, metric


def test_every_metric_an_alert_watches_is_on_the_dashboard() -> None:
    """Whoever an alert pages finds what it watches on a panel (refused connections and streams had none)."""
    on_dashboard = set().union(*(selectors(expr) for _, expr in dashboard_queries()))
    missing = {f"{where}: {name}" for where, expr in all_queries() if where.startswith("alert ")
               for name in selectors(expr) - on_dashboard - PROMETHEUS_SERIES}
    assert not missing, "alerted on but on no panel:\n" + "\n".join(sorted(missing))


def test_every_queried_metric_is_exported(exported: set[str]) -> None:
    queries = all_queries()
    assert len(queries) > 15
    unknown = {
        f"{where}: {name}"
        for where, expr in queries
        for name in selectors(expr)
        if name not in exported and name not in PROMETHEUS_SERIES
    }
    assert not unknown, "queried but not exported:\n" + "\n".join(sorted(unknown))


def test_exported_names_include_the_contract(exported: set[str]) -> None:
    for name in CONTRACT:
        assert name in exported, name
    # and a name that only looks right is not taken for exported
    assert "vocos_queue_depth_total" not in exported


@pytest.mark.parametrize("hpa_file", ["base/hpa.yaml", "overlays/cpu/hpa-cpu.yaml", "overlays/gpu/hpa-gpu.yaml"])
def test_hpa_metrics_are_served_by_the_adapter_from_exported_series(hpa_file: str, exported: set[str]) -> None:
    hpa = load_yaml(KUBERNETES / hpa_file)
    pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics, f"{hpa_file} has no custom per-pod metric"
    for pods_metric in pods_metrics:
        (rule,) = [r for r in load_yaml(ADAPTER)["rules"]["custom"] if r["name"]["as"] == pods_metric]
        assert selectors(rule["seriesQuery"]) == {pods_metric}
        assert selectors(rule["seriesQuery"]) <= exported


def test_every_exported_metric_is_in_the_deployment_guide(exported: set[str]) -> None:
    documented = set(re.findall(r"^\| `(vocos_\w+)` \|", (REPO / "docs" / "deployment.md").read_text(), re.MULTILINE))
    families = {name for name in exported if name.startswith("vocos_")
                and not name.endswith(("_bucket", "_sum", "_count", "_created"))}
    # A histogram's family is named by its _bucket series; a counter's by its _total one.
    families |= {name[: -len("_bucket")] for name in exported if name.endswith("_bucket")}
    assert families - documented == set(), "exported but missing from docs/deployment.md#metrics"
    assert documented - families == set(), "in docs/deployment.md#metrics but not exported"


def test_each_metrics_help_is_what_the_deployment_guide_says_it_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics' HELP and the guide's table had drifted apart: the HELP of vocos_audio_seconds_total left out the
    calls whose deadline passed, that of the latency how a slow reader counts."""
    torch = require_module("torch", "torch")
    metrics_module = require_module("service.runtime.metrics", "the service package")
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    metrics = metrics_module.ServiceMetrics()
    metrics.watch_devices(["cuda:0"])
    rows = re.findall(r"^\| `(vocos_\w+)` \| \w+ \| [^|]* \| (.*) \|$", (REPO / "docs" / "deployment.md").read_text(),
                      re.MULTILINE)
    guide = {name: text.replace("`", "") for name, text in rows}
    differ = [f"{family.name}: HELP {family.documentation!r}" for family in metrics.registry.collect()
              if not guide.get(family.name + ("_total" if family.type == "counter" else ""), "").startswith(
                  family.documentation.rstrip("."))]
    assert not differ, "HELP is not how docs/deployment.md#metrics begins:\n" + "\n".join(differ)
