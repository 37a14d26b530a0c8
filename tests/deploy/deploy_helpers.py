"""Helpers of the deployment checks: repo paths, required tools, YAML, subprocesses.

The tools come from scripts/install-test-tools.sh. A test whose tool is missing fails under CI
(``CI`` set) and is skipped with the install command as its reason elsewhere.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
TOOLS_DIR = Path(os.environ.get("VOCOS_TEST_TOOLS_DIR", Path.home() / ".cache" / "vocos-serve-test-tools"))
INSTALL_HINT = "bash scripts/install-test-tools.sh"

Docs = list[dict[str, Any]]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(available: bool, what: str) -> None:
    """Fail (under CI) or skip (elsewhere) unless ``available``; the reason names the install step."""
    if available:
        return
    message = f"{what} is not installed; run `{INSTALL_HINT}`"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str, what: str) -> Any:
    """Import ``name``, or fail/skip like :func:`require`."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, what)
        raise  # unreachable: require fails or skips


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"`{name}`")
    assert path is not None
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def only(docs: Docs, kind: str) -> dict[str, Any]:
    """The one document of ``kind``."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]
