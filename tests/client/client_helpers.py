"""Shared by the client tests: a real server on the tiny models."""

from __future__ import annotations

from pathlib import Path

from service.testing import ServerProcess


def start_server(mel: Path, encodec: Path, weights: Path, log: Path, *extra: str) -> ServerProcess:
    """Both models served, ready; the caller stops it."""
    server = ServerProcess(["--mel-model", str(mel), "--encodec-model", str(encodec), "--encodec-weights",
                            str(weights), "--max-wait-ms", "2", *extra], log)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server
