"""constraints.txt pins every Python package the test command installs, and this run uses those pins."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    """``"fastapi>=0.110"`` -> ``"fastapi"``, normalised as pip compares names."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]).lower()


def _pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    return {_name(name): wanted for name, wanted in pins.items()}


def _direct_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]  # its own distribution
    extras = project["optional-dependencies"]
    names = {_name(r) for r in project["dependencies"] + extras["serve"] + client["dependencies"] + extras["train"]
             + extras["test"]}
    tools = (ROOT / "scripts" / "install-test-tools.sh").read_text()
    block = tools[tools.index("PY_PINS=(") : tools.index(")", tools.index("PY_PINS=("))]
    names |= {_name(pin) for pin in re.findall(r"^\s+(\S+==\S+)$", block, flags=re.M)}
    return names - {"torch", "vocos-serve"}  # torch is pinned in the install command itself


def test_every_line_is_an_exact_pin() -> None:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        assert not line or line.startswith("#") or re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), line


def test_every_direct_requirement_is_pinned() -> None:
    missing = sorted(_direct_requirements() - set(_pins()))
    assert not missing, f"add to constraints.txt (bash scripts/update-constraints.sh): {missing}"


@pytest.mark.parametrize("name", sorted(_direct_requirements()))
def test_installed_version_is_the_pinned_one(name: str) -> None:
    try:
        installed = version(name)
    except PackageNotFoundError:
        pytest.skip(f"{name} is not installed in this environment")
    assert installed == _pins()[name], f"{name} {installed} is installed; constraints.txt pins {_pins()[name]}"


def test_the_image_pins_the_versions_the_tests_run() -> None:
    """deploy/docker/requirements.txt (the image's exact pins) agrees with constraints.txt."""
    pins = _pins()
    image = (ROOT / "deploy" / "docker" / "requirements.txt").read_text().splitlines()
    differ = {}
    for line in image:
        if "==" in line and not line.startswith("#"):
            name, wanted = line.split("==", 1)
            if _name(name) in pins and pins[_name(name)] != wanted:
                differ[name] = (wanted, pins[_name(name)])
    assert not differ, f"image pin vs constraints.txt: {differ}"
