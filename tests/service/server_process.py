"""The server in a process of its own (`python -m service` on a free loopback port), for tests that need
real signals, a real event loop not shared with the client, or the server's own memory."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

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


class ServerProcess:
    """``python -m service --host 127.0.0.1 --port <free> *args`` with ``env`` on top of a clean
    environment (no VOCOS_* of the shell, Hub offline); output goes to ``log``."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port), *args]
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=clean_env(**(env or {})), stdout=sink, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited during start-up:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
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
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
