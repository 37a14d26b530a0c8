"""A real Prometheus scrapes a real vocos-serve on loopback; counters, queries and alert rules check out.

Both processes listen on 127.0.0.1 only, every wait is bounded, and both are stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import REPO, instructions, require_binary, require_module
from deploy_queries import all_queries

pytestmark = pytest.mark.slow

MEL_FRAMES = 24
WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``.

    A refused or dropped connection (a process still starting) counts as not yet.
    """
    httpx = require_module("httpx", "httpx")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except (OSError, httpx.TransportError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise


@pytest.fixture
def vocos_server(mel_checkpoint: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    require_module("service.http.app", "the service package")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOCOS_")}
    env.update(VOCOS_MEL_MODEL=str(mel_checkpoint), VOCOS_ENCODEC_MODEL="none", VOCOS_HOST="127.0.0.1",
               VOCOS_PORT=str(port), VOCOS_DEVICE="cpu", VOCOS_DRAIN_TIMEOUT_S="5",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    log = tmp_path / "vocos-serve.log"
    process = start([sys.executable, "-m", "service"], log, env)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop(process)
        sys.stderr.write(log.read_text(errors="replace")[-4000:])


@pytest.fixture
def prometheus(vocos_server: tuple[str, Any], tmp_path: Path) -> Iterator[str]:
    binary = require_binary("prometheus")
    port = free_port()
    shutil.copy(REPO / "deploy" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    target = vocos_server[0].removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - alerts.yml\n"
        f"scrape_configs:\n  - job_name: vocos-serve\n    static_configs:\n      - targets: ['{target}']\n"
    )
    log = tmp_path / "prometheus.log"
    cmd = [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}"]
    process = start(cmd, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        sys.stderr.write(log.read_text(errors="replace")[-2000:])


def query(httpx: Any, prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return list(body["data"]["result"])


def scalar(httpx: Any, prometheus: str, expr: str) -> float:
    result = query(httpx, prometheus, expr)
    return float(result[0]["value"][1]) if result else 0.0


def decode(httpx: Any, server: str, count: int) -> None:
    mel = [[0.0] * MEL_FRAMES for _ in range(100)]
    for _ in range(count):
        response = httpx.post(f"{server}/decode/mel", json={"mel": mel}, timeout=30)
        assert response.status_code == 200, response.text


def test_prometheus_scrapes_the_service_and_runs_every_deployment_query(
        vocos_server: tuple[str, subprocess.Popen[bytes]], prometheus: str) -> None:
    httpx = require_module("httpx", "httpx")
    server, process = vocos_server
    wait_for("vocos-serve /readyz", lambda: httpx.get(f"{server}/readyz", timeout=2).status_code == 200)
    wait_for("Prometheus /-/ready", lambda: httpx.get(f"{prometheus}/-/ready", timeout=2).status_code == 200)

    def value(expr: str) -> float:
        return scalar(httpx, prometheus, expr)

    # Two waves, so the counters exist before the second and rate() sees them grow.
    served = 'sum(vocos_requests_total{endpoint="/decode/mel",status="200"})'
    decode(httpx, server, 1)
    wait_for("the first request in Prometheus", lambda: value(served) >= 1)
    decode(httpx, server, 3)
    wait_for("all four requests in Prometheus", lambda: value(served) == 4)

    assert value('up{job="vocos-serve"}') == 1
    assert value("vocos_ready") == 1
    audio_s = 4 * MEL_FRAMES * 256 / 24000  # hop 256 at 24 kHz
    assert value('sum(vocos_audio_seconds_total{model="mel"})') == pytest.approx(audio_s, rel=0.05)
    assert value("sum(rate(vocos_audio_seconds_total[1m]))") > 0
    assert value('sum(vocos_batch_size_count{model="mel"})') >= 4

    # Prometheus accepts every dashboard, alert and adapter query, and the HPA's series is there.
    for where, expr in all_queries():
        query(httpx, prometheus, expr)
        if where == "panel 'Batch size'" and "histogram_quantile(0.9" in expr:
            # the sequential requests were batches of 1: interpolated within the bucket (0, 1], the p90 was 0.9
            assert value(expr) == 1, expr
    assert query(httpx, prometheus, "sum(vocos_queue_depth)")

    # Every alert rule loads and evaluates cleanly against the live series, and none fires.
    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

    rules = wait_for("the alert rules to evaluate", evaluated)
    assert {rule["name"] for rule in rules} >= {"VocosHigh5xxRate", "VocosHighP99Latency", "VocosNotReady"}
    assert [rule["name"] for rule in rules if rule["state"] != "inactive"] == []

    # The image's HEALTHCHECK command passes against the live server and fails against a closed port.
    port = server.rsplit(":", 1)[1]
    assert healthcheck(port).returncode == 0
    assert healthcheck(str(free_port())).returncode != 0

    # SIGTERM: the server drains and exits cleanly, as compose and Kubernetes expect.
    assert stop(process) == 0


def healthcheck(port: str) -> subprocess.CompletedProcess[bytes]:
    """Run the Dockerfile's HEALTHCHECK CMD (its `python` being this interpreter) with VOCOS_PORT=port."""
    dockerfile = instructions((REPO / "Dockerfile").read_text())
    (health,) = [args for instruction, args in dockerfile if instruction == "HEALTHCHECK"]
    cmd = json.loads(health.split(" CMD ", 1)[1])
    assert cmd[0] == "python"
    env = dict(os.environ, VOCOS_PORT=port)
    return subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, timeout=10, check=False)
