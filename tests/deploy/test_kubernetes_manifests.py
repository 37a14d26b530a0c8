"""The kustomize base and overlays: rendered with kubectl, validated offline, and wired consistently."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from deploy_helpers import KUBERNETES, REPO, Docs, load_yaml, only, require_binary, require_module, run

from service.http.server import GRACE_AFTER_DRAIN_S

# The oldest Kubernetes these manifests promise to work on, and the newest schema bundled offline.
OLDEST_KUBERNETES = "1.27.0"
CORE_KINDS = {"Namespace", "ConfigMap", "Service", "PersistentVolumeClaim", "Deployment",
              "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _kubernetes_validate() -> Any:
    return require_module("kubernetes_validate", "kubernetes-validate (PyPI)")


def _crd_models() -> Any:
    return require_module("cloudcoil.models.prometheus_operator.v1",
                          "cloudcoil-models-prometheus-operator (PyPI)")


def server(docs: Docs) -> dict[str, Any]:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "server"]
    return container


def config_data(docs: Docs) -> dict[str, str]:
    return only(docs, "ConfigMap")["data"]


# -- schema validation ---------------------------------------------------------------------------------


def test_each_overlay_renders_exactly_the_expected_kinds(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == sorted(CORE_KINDS | CUSTOM_KINDS)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"vocos-serve"}


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_core_resources_pass_strict_schema_validation(overlay: tuple[str, Docs], version: str) -> None:
    kv = _kubernetes_validate()
    version = kv.latest_version() if version == "latest" else version
    for doc in overlay[1]:
        if doc["kind"] in CORE_KINDS:
            kv.validate(doc, version, strict=True)  # raises ValidationError naming the field


def test_strict_schema_validation_catches_a_misspelt_probe(overlay: tuple[str, Docs]) -> None:
    kv = _kubernetes_validate()
    deployment = copy.deepcopy(only(overlay[1], "Deployment"))
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, OLDEST_KUBERNETES, strict=True)


def validate_custom_resource(doc: dict[str, Any]) -> None:
    """Validate against the CRD's schema (cloudcoil's models are generated from the CRD OpenAPI schemas).

    The models ignore unknown fields, so a field that does not survive the round trip is reported as
    unknown, as the API server's strict field validation would.
    """
    model = getattr(_crd_models(), doc["kind"]).model_validate(doc)
    kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = _unknown_fields(doc, kept, "")
    assert not unknown, f"{doc['kind']}: unknown fields {unknown}"


def _unknown_fields(given: Any, kept: Any, where: str) -> list[str]:
    if isinstance(given, dict) and isinstance(kept, dict):
        found = []
        for key, value in given.items():
            if key not in kept:
                found.append(f"{where}.{key}")
            else:
                found += _unknown_fields(value, kept[key], f"{where}.{key}")
        return found
    if isinstance(given, list) and isinstance(kept, list):
        pairs = enumerate(zip(given, kept, strict=True))
        return [f for i, (g, k) in pairs for f in _unknown_fields(g, k, f"{where}[{i}]")]
    return []


def test_custom_resources_match_their_crd_schemas(overlay: tuple[str, Docs]) -> None:
    for kind in sorted(CUSTOM_KINDS):
        validate_custom_resource(only(overlay[1], kind))


@pytest.mark.parametrize(
    ("kind", "path", "key", "value"),
    [("ServiceMonitor", ("spec", "endpoints", 0), "intervall", "15s"),
     ("ServiceMonitor", ("spec", "endpoints", 0), "interval", "15 seconds"),
     ("PrometheusRule", ("spec", "groups", 0, "rules", 0), "for", "five minutes")],
)
def test_crd_validation_catches_broken_fields(overlay: tuple[str, Docs], kind: str, path: tuple, key: str,
                                              value: str) -> None:
    doc = copy.deepcopy(only(overlay[1], kind))
    node = doc
    for step in path:
        node = node[step]
    node[key] = value
    with pytest.raises((AssertionError, pydantic.ValidationError)):
        validate_custom_resource(doc)


# -- wiring ----------------------------------------------------------------------------------------------


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_selectors_pick_the_server_pods(overlay: tuple[str, Docs]) -> None:
    docs = overlay[1]
    deployment = only(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert _matches(only(docs, "Service")["spec"]["selector"], pod_labels)
    assert _matches(only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    assert _matches(only(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], pod_labels)
    for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert _matches(spread["labelSelector"]["matchLabels"], pod_labels)
    service = only(docs, "Service")
    monitor = only(docs, "ServiceMonitor")
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_ports_and_probes_use_the_servers_named_port(overlay: tuple[str, Docs]) -> None:
    docs = overlay[1]
    container = server(docs)
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": int(config_data(docs)["VOCOS_PORT"]), "protocol": "TCP"}
    assert only(docs, "Service")["spec"]["ports"][0]["targetPort"] == "http"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "http"}
    # Models load before the port opens: the startup probe must allow a full (download and) load.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    ingress = only(docs, "NetworkPolicy")["spec"]["ingress"]
    ingress_ports = [p["port"] for rule in ingress for p in rule["ports"]]
    assert ingress_ports == ["http"]


def test_termination_grace_covers_pre_stop_and_drain(overlay: tuple[str, Docs]) -> None:
    docs = overlay[1]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    command = server(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = float(config_data(docs)["VOCOS_DRAIN_TIMEOUT_S"])
    # The server exits at most GRACE_AFTER_DRAIN_S after its drain deadline (uvicorn's own limit).
    assert pod["terminationGracePeriodSeconds"] >= float(command[1]) + drain + GRACE_AFTER_DRAIN_S


def test_config_map_holds_valid_service_settings(overlay: tuple[str, Docs],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings_module = require_module("service.settings", "the service package")
    data = config_data(overlay[1])
    fields = {f"VOCOS_{name.upper()}" for name in settings_module.Settings.model_fields}
    assert set(data) <= fields, f"not settings of the service: {sorted(set(data) - fields)}"
    assert "VOCOS_API_KEYS" not in data, "API keys belong in the Secret"
    for name in [k for k in os.environ if k.startswith("VOCOS_")]:
        monkeypatch.delenv(name)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = settings_module.Settings()  # raises on any value the service would refuse
    expected_device = {"cpu": "cpu", "gpu": "cuda"}[overlay[0]]
    assert settings.device == expected_device


def test_api_keys_come_from_a_secret(overlay: tuple[str, Docs]) -> None:
    env = {e["name"]: e for e in server(overlay[1])["env"]}
    ref = env["VOCOS_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "vocos-serve-api-keys", "key": "VOCOS_API_KEYS"}


def test_gpu_overlay_requests_a_gpu_and_cpu_overlay_none(overlay: tuple[str, Docs]) -> None:
    name, docs = overlay
    resources = server(docs)["resources"]
    env = {e["name"]: e.get("value") for e in server(docs)["env"]}
    # torch's thread pool must match the CPUs the pod gets, not the node's.
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(resources["requests"]["cpu"])
    assert "VOCOS_API_KEYS" in env  # the overlay's env adds to the base's, not replaces it
    if name == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == "1"
        tolerations = only(docs, "Deployment")["spec"]["template"]["spec"]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    else:
        assert "nvidia.com/gpu" not in str(only(docs, "Deployment"))
        assert env["OMP_NUM_THREADS"] == str(resources["limits"]["cpu"])


def test_models_are_fetched_into_the_claim_before_the_server_starts(overlay: tuple[str, Docs]) -> None:
    docs = overlay[1]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    claim = only(docs, "PersistentVolumeClaim")
    (cache_volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert cache_volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["python", "/opt/vocos/prefetch_models.py"]
    assert (REPO / "Dockerfile").read_text().count("/opt/vocos/prefetch_models.py") >= 2  # copied and baked
    for container in (init, server(docs)):
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts[cache_volume["name"]] == "/var/cache/vocos"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {e["name"]: e["value"] for e in server(docs)["env"] if "value" in e}["HF_HUB_OFFLINE"] == "1"
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The image's user, so files the init container writes are the server's.
    image_uid = re.search(r"^ARG VOCOS_UID=(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert image_uid and pod["securityContext"]["runAsUser"] == int(image_uid.group(1))


def _settings_env(container: dict[str, Any], config_map: dict[str, Any], data: dict[str, str],
                  secret: str) -> dict[str, str]:
    """The VOCOS_* environment ``container`` gets: ``data`` when it reads ``config_map``, then its own env, each
    Secret reference as ``secret``."""
    reads = {"configMapRef": {"name": config_map["metadata"]["name"]}} in container.get("envFrom", [])
    env = dict(data) if reads else {}
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", secret)
    return {k: v for k, v in env.items() if k.startswith("VOCOS_")}


def test_init_container_validates_the_servers_settings(overlay: tuple[str, Docs],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """prefetch_models.py validates every setting as the server does: without the API keys the server gets
    from the Secret, VOCOS_METRICS_REQUIRE_KEY=true failed the init container and the pods never started."""
    from service.settings import Settings

    docs = overlay[1]
    (init,) = only(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    config_map = only(docs, "ConfigMap")
    data = {**config_map["data"], "VOCOS_METRICS_REQUIRE_KEY": "true"}
    server_env = _settings_env(server(docs), config_map, data, "a-key")
    init_env = _settings_env(init, config_map, data, "a-key")
    assert server_env["VOCOS_API_KEYS"] == "a-key"
    assert init_env == {**server_env, "VOCOS_DEVICE": "cpu"}  # the one difference: its probe decode needs no GPU
    for name in [k for k in os.environ if k.startswith("VOCOS_")]:
        monkeypatch.delenv(name)
    for key, value in init_env.items():
        monkeypatch.setenv(key, value)
    assert Settings(**{}).metrics_require_key  # as prefetch builds it; raised "needs API keys" before


def _pods_targets(hpa: dict[str, Any]) -> dict[str, float]:
    """The HPA's Pods metrics: name -> average value per pod it aims at."""
    return {m["pods"]["metric"]["name"]: float(m["pods"]["target"]["averageValue"])
            for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}


def test_autoscaler_scales_the_deployment_on_queue_depth_streams_and_cpu(overlay: tuple[str, Docs]) -> None:
    docs = overlay[1]
    hpa = only(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", only(docs, "Deployment")["metadata"]["name"])
    resources = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert resources == ["cpu"]
    pods_metrics = _pods_targets(hpa)
    # A stream's steps never enter the request queue: on queue depth alone (and a GPU pod's idle CPU), a
    # stream-only load never scaled out, and every replica refused new streams at VOCOS_MAX_STREAMS.
    assert set(pods_metrics) == {"vocos_queue_depth", "vocos_streams_active"}
    adapter = load_yaml(KUBERNETES / "prometheus-adapter" / "values.yaml")
    assert set(pods_metrics) <= {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert only(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def test_autoscaler_targets_stay_below_the_limits_that_refuse_work(overlay: tuple[str, Docs]) -> None:
    """Scale out before a replica refuses: its queue (429) and its streams (503) at their limits."""
    from service.settings import Settings

    targets = _pods_targets(only(overlay[1], "HorizontalPodAutoscaler"))
    data = config_data(overlay[1])
    defaults = Settings.model_fields
    max_streams = int(data.get("VOCOS_MAX_STREAMS", defaults["max_streams"].default))
    max_queue = int(data["VOCOS_MAX_QUEUE_SIZE"])
    # Per pod, summed over models; refusals begin at the limit of one model (all streams on one).
    assert 0 < targets["vocos_streams_active"] <= max_streams / 2
    assert 0 < targets["vocos_queue_depth"] <= max_queue / 4


def test_pods_that_never_became_ready_do_not_block_node_drains(overlay: tuple[str, Docs]) -> None:
    """With the default policy, replicas that all crash-loop (a bad model path) leave the budget unmet, and
    the eviction API refuses every one of them: `kubectl drain` of their nodes waits forever."""
    assert only(overlay[1], "PodDisruptionBudget")["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_prometheus_rule_carries_the_alert_file_and_the_required_alerts(overlay: tuple[str, Docs]) -> None:
    alerts_file = load_yaml(REPO / "deploy" / "prometheus" / "alerts.yml")
    groups = only(overlay[1], "PrometheusRule")["spec"]["groups"]
    assert groups == alerts_file["groups"]
    names = {rule["alert"] for group in groups for rule in group["rules"]}
    assert {"VocosHigh5xxRate", "VocosHighP99Latency", "VocosQueueSaturated", "VocosNotReady"} <= names


@pytest.mark.parametrize("source", ["alerts.yml", "PrometheusRule"])
def test_alert_rules_pass_promtool(source: str, tmp_path: Path, render: Callable[[Path], Docs]) -> None:
    promtool = require_binary("promtool")
    if source == "alerts.yml":
        path = REPO / "deploy" / "prometheus" / "alerts.yml"
    else:
        rule = only(render(KUBERNETES / "overlays" / "gpu"), "PrometheusRule")
        path = tmp_path / "rules.yml"
        path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_alone_renders_and_validates(render: Callable[[Path], Docs]) -> None:
    kv = _kubernetes_validate()
    for doc in render(KUBERNETES / "base"):
        if doc["kind"] in CORE_KINDS:
            kv.validate(doc, OLDEST_KUBERNETES, strict=True)
        else:
            validate_custom_resource(doc)
