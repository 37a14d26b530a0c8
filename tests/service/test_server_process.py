"""The real server: `python -m service` / `vocos-serve` under uvicorn on loopback, SIGTERM drain,
and the one-line start-up failure. Each test bounds its time and kills its process at the end."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import read_audio

from service.testing import ServerProcess, clean_env, free_port, npy_bytes

NPY = {"content-type": "application/x-npy"}


@pytest.fixture
def mel_server(mel_checkpoint: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(["--mel-model", str(mel_checkpoint), "--encodec-model", "none", "--max-batch-size", "1",
                            "--max-wait-ms", "0", "--drain-timeout-s", "30"], tmp_path / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_serves_concurrent_clients_over_loopback(mel_server: ServerProcess) -> None:
    rng = np.random.default_rng(0)
    mels = [rng.standard_normal((100, t)).astype(np.float32) for t in (20, 45, 33, 60, 12, 50)]
    with httpx.Client(base_url=mel_server.url, timeout=30) as client, ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(
            lambda m: client.post("/decode/mel?format=wav32f", content=npy_bytes(m), headers=NPY), mels))
        assert client.get("/healthz").json()["status"] == "alive"
        json_response = client.post("/decode/mel", json={"mel": mels[0].tolist()})
    for mel, response in zip(mels, responses, strict=True):
        assert response.status_code == 200, response.text
        audio, rate, _ = read_audio(response.content)
        assert rate == 24000 and audio.size == (mel.shape[1] - 1) * 256
    assert json_response.status_code == 200 and json_response.headers["x-model"] == "mel"
    assert mel_server.metric('vocos_requests_total{endpoint="/decode/mel",status="200"}') == 7


def test_sigterm_drains_in_flight_requests_then_exits_0(mel_server: ServerProcess) -> None:
    # Six long requests (about 0.2 s of compute each) run one at a time behind each other.
    body = npy_bytes(np.random.default_rng(1).standard_normal((100, 30000)).astype(np.float32))
    with httpx.Client(base_url=mel_server.url, timeout=60) as client, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client.post, "/decode/mel", content=body, headers=NPY) for _ in range(6)]
        deadline = time.monotonic() + 30
        while mel_server.metric('vocos_queue_depth{model="mel"}') < 2:
            assert time.monotonic() < deadline, "requests never queued up"
            time.sleep(0.01)
        mel_server.process.send_signal(signal.SIGTERM)
        responses = [f.result(timeout=60) for f in futures]
    assert [r.status_code for r in responses] == [200] * 6
    assert all(len(r.content) == 2 * 29999 * 256 + 44 for r in responses)
    assert mel_server.process.wait(timeout=30) == 0
    output = mel_server.output()
    assert "draining" in output and "Finished server process" in output


def test_json_logs_are_one_object_per_line_uvicorns_and_the_access_lines_included(
        mel_checkpoint: Path, tmp_path: Path) -> None:
    server = ServerProcess(["--mel-model", str(mel_checkpoint), "--encodec-model", "none", "--log-format", "json"],
                           tmp_path / "server.log")
    try:
        server.wait_ready()
        response = httpx.post(f"{server.url}/decode/mel", content=npy_bytes(np.zeros((100, 9), np.float32) - 5),
                              headers={**NPY, "x-request-id": "json-1"}, timeout=30)
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 10  # the access line is written once the answer's last byte is sent
        while '"request_id": "json-1"' not in server.output() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.stop()  # SIGKILL: what was not written by now never will be
    entries = [json.loads(line) for line in server.output().splitlines()]  # every line is one object
    assert {"uvicorn.error", "service", "service.access"} <= {e["logger"] for e in entries}
    access = [e for e in entries if e.get("request_id") == "json-1"]
    assert [(a["path"], a["status"], a["bytes"]) for a in access] == [("/decode/mel", 200, len(response.content))]


def test_a_librarys_warning_is_a_json_record_too() -> None:
    code = ("from service.runtime.logs import configure_logging; configure_logging('info', 'json'); "
            "import warnings; warnings.warn('a library warns')")
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True,
                            timeout=60, check=True)
    (entry,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert entry["logger"] == "py.warnings" and "a library warns" in entry["message"]


def test_with_json_logs_the_line_that_says_why_the_server_stops_is_json_too(tmp_path: Path) -> None:
    """It was a plain "vocos-serve: ..." line among JSON ones, the line a collector most needs in a crash loop."""
    result = subprocess.run([sys.executable, "-m", "service", "--mel-model", str(tmp_path / "missing"),
                             "--encodec-model", "none", "--log-format", "json"],
                            env=clean_env(), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one object
    assert entries[-1]["level"] == "CRITICAL" and entries[-1]["message"].startswith("cannot load the mel model")


def test_unobtainable_model_fails_at_start_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    result = subprocess.run(
        [sys.executable, "-m", "service", "--mel-model", str(missing), "--encodec-model", "none"],
        env=clean_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vocos-serve: cannot load the mel model")
    assert "VOCOS_MEL_MODEL" in lines[0] and str(missing) in lines[0]


def test_unreachable_hub_fails_fast_and_says_what_to_do_once(tmp_path: Path) -> None:
    # A loopback port nothing listens on: the Hub refuses at once, and no test reaches the internet.
    env = {**clean_env(), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HOME": str(tmp_path / "hf")}
    del env["HF_HUB_OFFLINE"]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "service", "--mel-model", "charactr/vocos-mel-24khz", "--encodec-model", "none"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(set(lines)), result.stderr
    assert "unreachable" in lines[-1] and "not in the local Hub cache" in lines[-1]
    advice = ("Point VOCOS_MEL_MODEL (or --mel-model) at a local directory holding config.yaml and "
              "pytorch_model.bin")
    assert lines[-1].endswith("or set it to 'none' to disable the model.") and advice in lines[-1]
    assert result.stderr.count("local directory") == 1 and result.stderr.count("hf download") == 1, result.stderr


def test_library_records_are_logged_once(tmp_path: Path) -> None:
    code = ("import logging; from service.runtime.logs import configure_logging; configure_logging('info'); "
            "logging.getLogger('huggingface_hub.utils._http').warning('retrying once')")
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("retrying once") == 1, result.stderr
    assert "WARNING huggingface_hub.utils._http: retrying once" in result.stderr


@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_the_multipart_parsers_warnings_on_a_bad_upload_show_at_debug_only(level: str, shown: bool) -> None:
    # what python_multipart logs for a body that is not the multipart it declares (answered 400)
    code = (f"import logging; from service.runtime.logs import configure_logging; configure_logging({level!r}); "
            "logging.getLogger('python_multipart.multipart').warning('Expected boundary character 45')")
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert ("Expected boundary character 45" in result.stderr) is shown, result.stderr


def test_ctrl_c_while_models_load_ends_in_one_line_without_a_traceback() -> None:
    # Ctrl-C lands in the main thread while it waits for the load: here, the load itself raises it
    code = ("import sys, service.__main__ as m\n"
            "def load(settings):\n    raise KeyboardInterrupt\n"
            "m.load_models = load\n"
            "sys.exit(m.main(['--mel-model', 'none', '--encodec-model', 'none']))\n")
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 130, result.stderr
    assert "stopped by SIGINT while loading the models" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_while_models_load_stops_the_server_at_once() -> None:
    """As PID 1 of a container a signal without a handler is ignored: SIGTERM during a long load (or a
    download) waited for the orchestrator's SIGKILL. With a handler it ends the start in one line (143)."""
    code = ("import sys, time, service.__main__ as m\n"
            "def load(settings):\n    print('loading', file=sys.stderr, flush=True)\n    time.sleep(60)\n"
            "m.load_models = load\n"
            "sys.exit(m.main(['--mel-model', 'none', '--encodec-model', 'none']))\n")
    process = subprocess.Popen([sys.executable, "-c", code], env=clean_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        while "loading" not in process.stderr.readline():
            pass
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 143
        assert time.monotonic() - started < 5
        rest = process.stderr.read()
        assert "stopped by SIGTERM while loading the models" in rest and "Traceback" not in rest
    finally:
        process.kill()


def test_sigterm_while_the_server_imports_stops_the_console_script_at_once() -> None:
    """Importing the server takes seconds (torch); as PID 1 a signal with no handler yet was ignored. The
    console script's entry installs one first: here the import of ``service.__main__`` is held for a minute."""
    code = ("import importlib.abc, sys, time\n"
            "class Hold(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'service.__main__':\n"
            "            print('importing', file=sys.stderr, flush=True)\n"
            "            time.sleep(60)\n"
            "        return None\n"
            "sys.meta_path.insert(0, Hold())\n"
            "import tomllib, importlib\n"
            "entry = tomllib.load(open('pyproject.toml', 'rb'))['project']['scripts']['vocos-serve']\n"
            "module, function = entry.split(':')\n"
            "sys.exit(getattr(importlib.import_module(module), function)())\n")
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([sys.executable, "-c", code], env=clean_env(), stderr=subprocess.PIPE, text=True,
                               cwd=root)
    try:
        assert process.stderr is not None
        while "importing" not in (line := process.stderr.readline()):
            assert line, "the entry point never imported service.__main__"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 143  # handled (not death by the signal, -15)
        assert time.monotonic() - started < 5
        assert process.stderr.read() == "vocos-serve: stopped by SIGTERM while starting\n"
    finally:
        process.kill()


def test_a_dead_batching_loop_ends_the_server_with_status_1(mel_checkpoint: Path) -> None:
    """Compose, systemd and ``docker run --restart`` restart only a process that exits: a replica whose loop
    died answered 503 for good there (its liveness probe failed, which only Kubernetes acts on)."""
    code = ("import sys, service.__main__ as m, service.engine.engine as e\n"
            "async def dies(self):\n    raise RuntimeError('a bug in the batching loop')\n"
            "e.BatchingEngine._run = dies\n"
            f"sys.exit(m.main(['--mel-model', {str(mel_checkpoint)!r}, '--encodec-model', 'none',\n"
            f"                 '--host', '127.0.0.1', '--port', '{free_port()}', '--log-format', 'text']))\n")
    process = subprocess.Popen([sys.executable, "-c", code], env=clean_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert process.wait(60) == 1
        assert process.stderr is not None
        log = process.stderr.read()
        assert "a batching loop has stopped: draining, then exiting with status 1" in log, log
    finally:
        process.kill()


def test_console_script_is_installed() -> None:
    script = shutil.which("vocos-serve")
    if script is None:
        pytest.skip("vocos-serve is not on PATH (package not installed)")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, env=clean_env())
    assert result.returncode == 0
    assert "--max-batch-size" in result.stdout and "VOCOS_MAX_BATCH_SIZE" in result.stdout


def test_a_server_of_three_named_models_from_the_environment(
    mel_checkpoint: Path, encodec_checkpoint: Path, encodec_weights: Path, tmp_path: Path
) -> None:
    from vocos_core.testing import write_random_checkpoint

    hifigan = write_random_checkpoint(tmp_path / "tts22k", "hifigan-mel")
    models = f"mel={mel_checkpoint},encodec={encodec_checkpoint},tts22k={hifigan}"
    server = ServerProcess(["--device", "cpu"], tmp_path / "server.log",
                           env={"VOCOS_MODELS": models, "VOCOS_ENCODEC_WEIGHTS": str(encodec_weights)})
    try:
        server.wait_ready()
        listed = httpx.get(f"{server.url}/models", timeout=10).json()["models"]
        assert [(m["name"], m["kind"], m["sample_rate"]) for m in listed] == [
            ("mel", "mel", 24000), ("encodec", "encodec", 24000), ("tts22k", "mel", 22050)]
        mel80 = np.zeros((80, 30), np.float32) - 4
        response = httpx.post(f"{server.url}/decode/mel?model=tts22k", content=npy_bytes(mel80), headers=NPY,
                              timeout=30)
        assert response.status_code == 200 and read_audio(response.content)[1] == 22050
    finally:
        server.stop()
