"""SIGTERM (and Ctrl-C) to the scripts that start a server: the server stops and the temporary models go.

SIGTERM's default action ended the script without its ``finally``, leaving the ``python -m service`` child
running, orphaned, with its port and /tmp model folder. Each run here is a tiny random model, stopped as
soon as its server answers.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripts_helpers import SCRIPTS

from service.testing import sigterm_exits


def _lines(stream: object) -> queue.Queue[str]:
    """The lines of ``stream`` as they come, read in a thread (a pipe's readline has no timeout)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], pattern: str, timeout: float = 240) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        seen.append(line)
        if match := re.search(pattern, line):
            return match
        assert line, "the script ended first:\n" + "".join(seen)
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + "".join(seen))


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def script() -> Iterator[list[subprocess.Popen[str]]]:
    """Started scripts; at the end each is killed with whatever server it left."""
    started: list[subprocess.Popen[str]] = []
    leftovers: list[int] = []
    yield started
    for process in started:
        if process.poll() is None:
            leftovers += _children(process.pid)
            process.kill()
        process.wait(30)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)


def _start(script: list[subprocess.Popen[str]], tmp: Path, name: str, *flags: str) -> subprocess.Popen[str]:
    """``scripts/<name>`` with its temporary folders (loadgen keeps its server logs) under ``tmp``."""
    process = subprocess.Popen([sys.executable, str(SCRIPTS / name), "--random-dim", "8", "--random-layers", "1",
                                *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)})
    script.append(process)
    return process


def _stop(process: subprocess.Popen[str], signum: int) -> tuple[int, list[int], str]:
    """Signal the script alone (not its group); its exit status, the children it had, its stderr."""
    children = _children(process.pid)
    assert children, "the server is not a child of the script"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=90)
    return process.returncode, children, stderr


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
            return True
        time.sleep(0.1)
    return False


def test_sigterm_exits_runs_finally_and_restores_the_handler(tmp_path: Path) -> None:
    code = ("import os, signal, sys, time\nfrom service.testing import sigterm_exits\n"
            "with sigterm_exits():\n    try:\n        print('ready', flush=True)\n        time.sleep(60)\n"
            f"    finally:\n        open({str(tmp_path / 'cleaned')!r}, 'w').close()\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 143
    finally:
        process.kill()
    assert (tmp_path / "cleaned").exists()
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_exits():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_to_loadgen_stops_its_server_and_removes_the_model(script: list[subprocess.Popen[str]],
                                                                   tmp_path: Path) -> None:
    process = _start(script, tmp_path, "loadgen.py", "--clients", "1", "--duration", "600", "--warmup", "0.2",
                     "--inputs", "2", "--min-seconds", "0.2", "--max-seconds", "0.3", "--cpu-matmul", "mkl")
    assert process.stdout is not None
    lines = _lines(process.stdout)
    model = Path(_wait_for(lines, r"^model (\S+) ").group(1))
    assert model.exists()
    plans = _wait_for(lines, r"server max_batch_size=16: matmuls (\S+) \| raw model: matmuls (\S+)")
    assert plans.groups() == ("mkl", "mkl")  # --cpu-matmul reached both sides
    status, children, stderr = _stop(process, signal.SIGTERM)
    assert status == 143, stderr
    assert all(_gone(pid) for pid in children), "the server outlived the script"
    assert not model.parent.exists()


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopping_stream_load_stops_its_server_without_a_traceback(
        script: list[subprocess.Popen[str]], tmp_path: Path, signum: int, status: int) -> None:
    process = _start(script, tmp_path, "stream_load.py", "--streams", "1", "--seconds", "120", "--stagger", "0",
                     "--skip-throughput")
    assert process.stdout is not None
    match = _wait_for(_lines(process.stdout), r"^model (\S+) .* \| server http://127\.0\.0\.1:(\d+) ")
    time.sleep(1)  # the stream under way
    returncode, children, stderr = _stop(process, signum)
    assert returncode == status, stderr
    assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr
    assert all(_gone(pid) for pid in children) and not _listening(int(match.group(2)))
    assert not Path(match.group(1)).parent.exists()
