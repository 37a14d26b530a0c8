"""The one harness that tests and scripts share: the server in a process of its own (``python -m service``
on a free loopback port), and the request bodies they send (``.npy`` arrays, audio files).

For tests that need real signals, an event loop not shared with the client, or the server's own
memory, and for the load generator and the soak. Random checkpoints to serve come from
``vocos_core.testing``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the shell's VOCOS_* settings, the Hub offline, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOCOS_")}
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """Inside the block, SIGTERM raises ``SystemExit(143)`` in the main thread, as Ctrl-C raises
    KeyboardInterrupt: SIGTERM's default action ends the process without unwinding, so a script's
    ``finally`` never stopped its :class:`ServerProcess` (left running, orphaned, with its port) nor
    removed its temporary model folder. A later SIGTERM is ignored while that clean-up runs (it
    would cut it short); SIGKILL still ends it. Outside the main thread (a test calling a script's
    ``main`` from a thread) nothing changes, as Python lets only the main thread set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_143(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, exit_143)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class ServerProcess:
    """``python -m service --host 127.0.0.1 --port <free> *args`` with ``env`` on top of a clean
    environment (no VOCOS_* of the shell, Hub offline); output goes to ``log`` (None: discarded).
    ``own_session``: out of the caller's process group, so a terminal's Ctrl-C reaches the caller alone
    and the server stays up while the caller closes its connections (then stops it)."""

    def __init__(self, args: list[str], log: Path | None, env: dict[str, str] | None = None,
                 own_session: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port), *args]
        # The package from wherever this process imports it (a checkout that is not installed, too).
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})}
        sink = log.open("wb") if log is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(command, cwd=ROOT, env=clean_env(**env), stdout=sink,
                                            stderr=subprocess.STDOUT, start_new_session=own_session)
        finally:
            if log is not None:
                sink.close()  # type: ignore[union-attr]

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        # One client for every poll: each new httpx client builds an SSL context (about 25 ms of CPU),
        # which polled 10 times a second took a fifth of a core from the server's start-up, where it
        # times its matmul ways.
        with httpx.Client(timeout=1) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, f"the server exited during start-up:\n{self.output()}"
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"the server was not ready within {timeout} s:\n{self.output()}")

    def metric(self, sample: str) -> float:
        """The value of one sample of /metrics, e.g. ``'vocos_queue_depth{model="mel"}'``."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        assert match, sample
        return float(match.group(1))

    def rss_bytes(self) -> int:
        """Resident memory of the server process (VmRSS)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM (a drain), then the exit status; None when it had to be killed after ``timeout`` s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as a ``.npy`` body (``np.save``, no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def audio_file(samples: np.ndarray, rate: int, container: str = "WAV", subtype: str | None = None) -> bytes:
    """``samples`` (S,) or (S, channels) encoded with libsndfile."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=container, subtype=subtype)
    return buffer.getvalue()
