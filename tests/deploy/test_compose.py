"""docker-compose.yml against the Compose specification schema, and the stack's own consistency."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import REPO, TOOLS_DIR, load_yaml, require, require_binary, require_module, run

from service.http.server import GRACE_AFTER_DRAIN_S

COMPOSE = REPO / "docker-compose.yml"
SCHEMA = TOOLS_DIR / "compose_spec.json"
_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?::?[-?]([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (``${VAR}``, ``${VAR:-default}``, ``$$``) over a loaded file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(3)
        return env.get(name) or (match.group(2) or "")

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # Substituted as `docker compose config` would with no variables set: every default applies.
    return interpolate(load_yaml(COMPOSE), {})


@pytest.fixture(scope="module")
def validator() -> Any:
    require(SCHEMA.is_file(), f"the Compose schema ({SCHEMA})")
    jsonschema = require_module("jsonschema", "jsonschema (installed with kubernetes-validate)")
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft201909Validator(schema)


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${UNSET:-d}/${UNSET}/$$SET/$SET", env) == "x/d/d//$SET/x"


def test_compose_file_is_valid_against_the_compose_schema(compose: dict[str, Any], validator: Any) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [(("services", "vocos-gpu"), "gpu_count", 1),
     (("services", "vocos-gpu", "deploy", "resources", "reservations", "devices", 0), "gpus", 1),
     (("services", "grafana"), "ports", "3000")],
)
def test_schema_rejects_a_broken_variant(compose: dict[str, Any], validator: Any, where: tuple, key: str,
                                         value: object) -> None:
    # A control: the schema is strict enough to catch a misspelt or mistyped key in this file.
    broken = copy.deepcopy(compose)
    node = broken
    for step in where:
        node = node[step]
    node[key] = value
    assert list(validator.iter_errors(broken))


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_docker_compose_accepts_the_file(profile: str) -> None:
    # docker-compose (Debian's 1.29.2) loads, interpolates and validates without a Docker engine.
    binary = require_binary("docker-compose")
    result = run([binary, "--file", str(COMPOSE), "--profile", profile, "config", "--quiet"],
                 env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")})
    assert result.returncode == 0, result.stderr


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    binary = require_binary("docker-compose")
    broken = COMPOSE.read_text().replace("  stop_grace_period: 45s", "  stop_grace_period: 45s\n  gpu_count: 1", 1)
    assert "gpu_count" in broken
    path = tmp_path / "docker-compose.yml"
    path.write_text(broken)
    result = run([binary, "--file", str(path), "config", "--quiet"])
    assert result.returncode != 0 and "gpu_count" in result.stderr


def test_gpu_profile_reserves_an_nvidia_gpu_and_cpu_profile_none(compose: dict[str, Any]) -> None:
    gpu, cpu = compose["services"]["vocos-gpu"], compose["services"]["vocos-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "deploy" not in cpu
    assert cpu["environment"]["VOCOS_DEVICE"] == "cpu"
    # Prometheus scrapes "vocos": both variants must answer to it.
    for service in (gpu, cpu):
        assert "vocos" in service["networks"]["default"]["aliases"]


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_stop_grace_period_outlasts_the_drain(compose: dict[str, Any]) -> None:
    for name in ("vocos-gpu", "vocos-cpu"):
        service = compose["services"][name]
        drain = float(service["environment"]["VOCOS_DRAIN_TIMEOUT_S"])
        assert service["stop_signal"] == "SIGTERM"
        assert _seconds(service["stop_grace_period"]) >= drain + GRACE_AFTER_DRAIN_S, name


def test_model_cache_volume_holds_both_caches(compose: dict[str, Any]) -> None:
    for name in ("vocos-gpu", "vocos-cpu"):
        service = compose["services"][name]
        assert "model-cache:/var/cache/vocos" in service["volumes"]
        env = service["environment"]
        for cache in ("HF_HOME", "TORCH_HOME"):
            assert env[cache].startswith("/var/cache/vocos/"), cache
    assert "model-cache" in compose["volumes"]


def test_hub_offline_mode_passes_through() -> None:
    """The README's way to serve from a filled cache without the Hub (HF_HUB_OFFLINE=1) did not reach the
    container: compose passes only the variables the file names."""
    for env, expected in (({"HF_HUB_OFFLINE": "1"}, "1"), ({}, "")):
        services = interpolate(load_yaml(COMPOSE), env)["services"]
        for name in ("vocos-gpu", "vocos-cpu"):
            assert services[name]["environment"]["HF_HUB_OFFLINE"] == expected, name


def test_every_bind_mount_exists(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"bind mount source {source} is missing"


def test_prometheus_config_is_valid_and_scrapes_the_service(compose: dict[str, Any]) -> None:
    promtool = require_binary("promtool")
    config_path = REPO / "deploy" / "prometheus" / "prometheus.yml"
    result = run([promtool, "check", "config", str(config_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_yaml(config_path)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "vocos-serve"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["vocos:8000"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_grafana_provisioning_points_at_the_mounted_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("."))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = load_yaml(REPO / "deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert datasources[0]["uid"] == "prometheus" and datasources[0]["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(REPO / "deploy/grafana/provisioning/dashboards/vocos-serve.yml")["providers"]
    assert provider["options"]["path"] == mounts["./deploy/grafana/dashboards"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    dashboard_file = os.path.basename(home)
    assert home == f"{provider['options']['path']}/{dashboard_file}"
    assert (REPO / "deploy" / "grafana" / "dashboards" / dashboard_file).is_file()


# Fixed by the file itself: the address the image listens on, the device of each profile, and the drain
# that stop_grace_period must outlast.
FIXED_SETTINGS = {"VOCOS_HOST", "VOCOS_PORT", "VOCOS_DEVICE", "VOCOS_DRAIN_TIMEOUT_S"}


def test_every_other_setting_passes_through_and_unset_ones_keep_the_server_defaults() -> None:
    from service.settings import Settings

    names = {f"VOCOS_{name.upper()}" for name in Settings.model_fields}
    given = {"VOCOS_MODELS": "mine=/models/mine", "VOCOS_MAX_STREAMS": "8"}
    for env in ({}, given):
        for name in ("vocos-gpu", "vocos-cpu"):
            environment = interpolate(load_yaml(COMPOSE), env)["services"][name]["environment"]
            settings_env = {k: str(v) for k, v in environment.items() if k.startswith("VOCOS_")}
            assert names - FIXED_SETTINGS <= settings_env.keys(), name
            with pytest.MonkeyPatch.context() as patch:
                for variable in [v for v in os.environ if v.startswith("VOCOS_")]:
                    patch.delenv(variable)
                for key, value in settings_env.items():
                    patch.setenv(key, value)
                settings = Settings()
            passed = {f"VOCOS_{f.upper()}" for f in settings.model_fields_set}
            assert passed == {"VOCOS_DEVICE", "VOCOS_DRAIN_TIMEOUT_S"} | env.keys(), name
            default = Settings.model_construct()  # the defaults, whatever the shell running the test sets
            expected = ("mine=/models/mine", 8) if env else (default.models, default.max_streams)
            assert (settings.models, settings.max_streams) == expected
