"""Fixtures of the client tests: a real server (``python -m service``) on tiny random models."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# With --import-mode=importlib no test folder is on sys.path; the tests import `client_helpers`.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from client_helpers import start_server

from service.testing import ServerProcess


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, mel_checkpoint: Path, encodec_checkpoint: Path, encodec_weights: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a module's tests (they share it; none changes its state), started with the module's
    ``SERVER_FLAGS`` (e.g. ``("--api-keys", KEY)``) where it has them."""
    log = tmp_path_factory.mktemp("client-server") / "server.log"
    flags = getattr(request.module, "SERVER_FLAGS", ())
    process = start_server(mel_checkpoint, encodec_checkpoint, encodec_weights, log, *flags)
    try:
        yield process
    finally:
        process.stop()
