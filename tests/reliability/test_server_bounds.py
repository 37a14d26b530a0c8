"""The real server process under floods and shutdown: probes answer while large JSON bodies are parsed,
parsing memory stays bounded, a drain that runs out of time answers JSON 503s, and secrets never
reach the access log."""

from __future__ import annotations

import json
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from reliability_helpers import http_request

from service.testing import ServerProcess, npy_bytes

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
JSON = "application/json"


@pytest.fixture
def start(mel_checkpoint: Path, tmp_path: Path) -> Iterator:
    """``start(*flags, env=...)`` -> a ready mel-only server process; every one is killed at the end."""
    started: list[ServerProcess] = []

    def run(*flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        args = ["--device", "cpu", "--mel-model", str(mel_checkpoint), "--encodec-model", "none", *flags]
        server = ServerProcess(args, tmp_path / f"server-{len(started)}.log", env)
        started.append(server)
        server.wait_ready()
        return server

    yield run
    for server in started:
        server.stop()


def post_raw(port: int, path: str, body: bytes, content_type: str) -> int:
    """One request over a blocking socket (sending releases the interpreter); the response's status."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(http_request("POST", path, body, [("content-type", content_type), ("connection", "close")]))
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_probes_answer_within_100_ms_while_large_json_bodies_are_parsed(start) -> None:
    server = start("--max-batch-size", "4")
    rng = np.random.default_rng(0)
    mel = np.round(rng.standard_normal((100, 9000)) - 3, 3)
    body = json.dumps({"mel": mel.tolist()}).encode()
    assert 6 * MIB < len(body) < 8 * MIB  # under the JSON limit: each one is parsed
    baseline = server.rss_bytes()
    peak = baseline
    latencies: list[float] = []
    done = threading.Event()

    def flood() -> list[int]:
        try:
            with ThreadPoolExecutor(8) as pool:
                return list(pool.map(lambda _: post_raw(server.port, "/decode/mel", body, JSON), range(24)))
        finally:
            done.set()

    with ThreadPoolExecutor(1) as runner, httpx.Client(base_url=server.url, timeout=10) as probe:
        statuses = runner.submit(flood)
        while not done.is_set():
            began = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - began)
            peak = max(peak, server.rss_bytes())
            time.sleep(0.02)
        assert statuses.result() == [200] * 24
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"{len(latencies)} probes during the flood: p50 {statistics.median(latencies) * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms; RSS +{(peak - baseline) / MIB:.0f} MiB")
    assert len(latencies) >= 20
    assert p99 < 0.100
    # Eight bodies held (under the byte budget), one parse at a time: a few hundred MiB at most.
    assert peak - baseline < 512 * MIB


def test_json_over_its_limit_is_413_before_parsing(start) -> None:
    server = start("--max-json-body-bytes", str(MIB))
    body = b'{"mel": [' + b"0.0," * MIB + b"0.0]}"
    response = httpx.post(f"{server.url}/decode/mel", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "VOCOS_MAX_JSON_BODY_BYTES" in response.json()["error"]["message"]
    assert ".npy" in response.json()["error"]["message"]


def queue_depth(client: httpx.Client) -> float:
    lines = client.get("/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("vocos_queue_depth{"))


def test_a_drain_that_times_out_answers_json_503s_and_exits_0(start) -> None:
    server = start("--max-batch-size", "1", "--drain-timeout-s", "0.3")
    mel = np.zeros((100, 20000), np.float32) - 4
    with ThreadPoolExecutor(12) as pool, httpx.Client(base_url=server.url, timeout=120,
                                                      limits=httpx.Limits(max_connections=16)) as client:
        calls = [pool.submit(client.post, "/decode/mel", content=npy_bytes(mel[:, : 20000 - i]),
                             headers={"content-type": "application/x-npy"}) for i in range(12)]
        deadline = time.monotonic() + 60
        while queue_depth(client) < 6:  # a queue longer than the drain timeout allows to finish
            assert time.monotonic() < deadline, "the load never queued up"
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        responses = [call.result() for call in calls]
    assert server.process.wait(timeout=60) == 0
    statuses = [r.status_code for r in responses]
    assert 503 in statuses and set(statuses) <= {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            error = response.json()["error"]
            assert error["type"] == "unavailable" and error["request_id"] == response.headers["x-request-id"]
    log = server.output()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]  # a drain's refusals are expected, not errors


def test_credentials_in_the_query_never_reach_the_access_log(start) -> None:
    key = "k3y-never-logged-93f1"
    server = start(env={"VOCOS_API_KEYS": key, "VOCOS_LOG_LEVEL": "info"})
    httpx.get(f"{server.url}/healthz?api_key={key}&model=mel")
    httpx.get(f"{server.url}/readyz?token=hunter2", headers={"authorization": f"Bearer {key}"})
    httpx.get(f"{server.url}/metrics?x={key}")
    time.sleep(0.3)
    log = server.output()
    assert "/healthz?api_key=***&model=mel" in log and "/readyz?token=***" in log
    assert key not in log and "hunter2" not in log
