"""Fixtures of the deployment checks: the kustomize renderer and the rendered overlays."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

# pytest runs with --import-mode=importlib, which puts no test folder on sys.path; the test modules
# here import their shared helpers as `deploy_helpers`.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_helpers import KUBERNETES, OVERLAYS, Docs, require, require_binary, run


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = require_binary("kubectl")
    require(run([path, "kustomize", "--help"]).returncode == 0, "`kubectl kustomize`")
    return path


@pytest.fixture(scope="session")
def render(kubectl: str) -> Callable[[Path], Docs]:
    """``render(dir)``: the documents ``kubectl kustomize dir`` prints; cached per directory."""
    cache: dict[Path, Docs] = {}

    def _render(directory: Path) -> Docs:
        if directory not in cache:
            result = run([kubectl, "kustomize", str(directory)])
            assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
            cache[directory] = [d for d in yaml.safe_load_all(result.stdout) if d]
        return cache[directory]

    return _render


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, render: Callable[[Path], Docs]) -> tuple[str, Docs]:
    """(name, rendered documents) of each overlay."""
    name = request.param
    return name, render(KUBERNETES / "overlays" / name)

