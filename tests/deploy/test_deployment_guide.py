"""docs/deployment.md#the-cluster says what the manifests do: each figure it gives is read from them here."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import KUBERNETES, REPO, Docs, load_yaml, only

GUIDE = REPO / "docs" / "deployment.md"


def cluster_section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("\n## The cluster\n")
    return text[start : text.index("\n## ", start + 1)]


def cluster_commands() -> list[str]:
    """The command lines of the section's first bash block, comments dropped."""
    block = re.search(r"```bash\n(.*?)```", cluster_section(), re.DOTALL)
    assert block, "no bash block in the cluster section"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def pod_spec(docs: Docs) -> dict[str, Any]:
    spec: dict[str, Any] = only(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def test_the_documented_commands_push_the_image_the_manifests_name(render: Callable[[Path], Docs]) -> None:
    """A cluster's nodes cannot pull an image built on the operator's machine: the guide applied the
    manifests without pushing one, and every pod stayed in ImagePullBackOff."""
    (image,) = load_yaml(KUBERNETES / "base" / "kustomization.yaml")["images"]
    pushed = [line.split()[-1] for line in cluster_commands() if line.startswith("docker push ")]
    assert pushed, "the cluster commands push no image"
    registry_name, tag = pushed[0].rsplit(":", 1)
    assert "/" in registry_name and registry_name.endswith("/" + image["name"]), registry_name
    assert tag == image["newTag"]
    # ... and say where the manifests take that name.
    assert "newName: " + registry_name in " ".join(cluster_section().split())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert image["newTag"] == version, "the manifests' image tag is not the project's version"
    for name in ("cpu", "gpu"):
        pod = pod_spec(render(KUBERNETES / "overlays" / name))
        for container in pod["initContainers"] + pod["containers"]:
            assert container["image"] == f"{image['name']}:{version}"


@pytest.mark.parametrize("overlay_name", ["cpu", "gpu"])
def test_the_shutdown_and_startup_figures_are_the_manifests(overlay_name: str, render: Callable[[Path], Docs]) -> None:
    docs = render(KUBERNETES / "overlays" / overlay_name)
    pod = pod_spec(docs)
    (server,) = [c for c in pod["containers"] if c["name"] == "server"]
    text = " ".join(cluster_section().split())
    sleep = server["lifecycle"]["preStop"]["exec"]["command"][1]
    drain = only(docs, "ConfigMap")["data"]["VOCOS_DRAIN_TIMEOUT_S"]
    assert f"A `preStop` sleep of {sleep} s" in text
    assert f"starts the {drain} s drain" in text
    assert f"`terminationGracePeriodSeconds: {pod['terminationGracePeriodSeconds']}`" in text
    startup = server["startupProbe"]
    assert f"The startup probe allows {startup['periodSeconds'] * startup['failureThreshold'] // 60} minutes" in text


def test_the_autoscaler_targets_are_the_manifests(render: Callable[[Path], Docs]) -> None:
    text = " ".join(GUIDE.read_text(encoding="utf-8").split())
    targets = {}
    for name in ("cpu", "gpu"):
        hpa = only(render(KUBERNETES / "overlays" / name), "HorizontalPodAutoscaler")
        targets[name] = {
            m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"]
            for m in hpa["spec"]["metrics"]
            if m["type"] == "Pods"
        }
    streams = targets["gpu"]["vocos_streams_active"], targets["cpu"]["vocos_streams_active"]
    assert f"The stream target is {streams[0]} per pod on GPU" in text
    assert f"and {streams[1]} on CPU" in text
    batch = {
        name: only(render(KUBERNETES / "overlays" / name), "ConfigMap")["data"]["VOCOS_MAX_BATCH_SIZE"]
        for name in ("cpu", "gpu")
    }
    assert batch == {name: t["vocos_queue_depth"] for name, t in targets.items()}  # one full batch per replica
    assert f"`VOCOS_MAX_BATCH_SIZE`: {batch['gpu']} on GPU, {batch['cpu']} on CPU" in text


def test_the_network_policy_is_described_in_full(render: Callable[[Path], Docs]) -> None:
    """The guide named the ingress sources only: a site whose pods reach the Hub through a proxy on
    another port learnt of the egress rule from a failed download."""
    policy = only(render(KUBERNETES / "overlays" / "gpu"), "NetworkPolicy")
    text = " ".join(cluster_section().split())
    ports = sorted({p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]})
    assert ports == [53, 443]
    assert "Outbound, the pods reach only DNS (port 53) and HTTPS (port 443)" in text


def test_replicas_spread_over_nodes_and_zones_as_a_preference(render: Callable[[Path], Docs]) -> None:
    """With the hostname alone, every replica could land in one zone and go down with it."""
    for name in ("cpu", "gpu"):
        spread = pod_spec(render(KUBERNETES / "overlays" / name))["topologySpreadConstraints"]
        keys = {c["topologyKey"]: c["whenUnsatisfiable"] for c in spread}
        # ScheduleAnyway: a cluster of one zone (or GPU nodes in one zone) must still schedule every replica.
        assert keys == {"kubernetes.io/hostname": "ScheduleAnyway", "topology.kubernetes.io/zone": "ScheduleAnyway"}
    assert "`topology.kubernetes.io/zone`" in cluster_section()


def test_section_parsing_finds_the_cluster_block() -> None:
    commands = cluster_commands()
    assert any(line.startswith("kubectl apply -k deploy/kubernetes/overlays/") for line in commands)
