"""``vocos_client`` imports in a process where the server's dependencies cannot be imported, and its
distribution (``client/``) brings none of them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BLOCKED = textwrap.dedent("""
    import sys

    BLOCKED = {"torch", "fastapi", "starlette", "uvicorn", "soundfile", "vocos_core", "service"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    import vocos_client
    from vocos_client import AsyncClient, Client, VocosClientError
    client = Client("http://127.0.0.1:9")
    client.close()
    try:
        import torch
    except ImportError as exc:
        print("blocked:", exc)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("loaded:", loaded)
""")


def test_imports_without_torch_fastapi_or_the_server() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKED], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(ROOT / "client"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "blocked: torch is blocked in this test" in result.stdout  # the blocker works
    assert "loaded: []" in result.stdout


@pytest.mark.slow
def test_the_client_distribution_holds_the_client_and_needs_only_numpy_httpx_websockets(tmp_path: Path) -> None:
    # Built from a copy: pip builds in the source folder, and would leave build/ and *.egg-info there.
    source = shutil.copytree(ROOT / "client", tmp_path / "client", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                             "--disable-pip-version-check", "--wheel-dir", str(tmp_path), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("vocos_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = Parser().parsestr(archive.read(metadata).decode()).get_all("Requires-Dist")
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"vocos_client"}
    assert "vocos_client/__init__.py" in names and "vocos_client/sync_stream.py" in names
    assert "vocos_client/py.typed" in names  # else a type checker skips the installed package (PEP 561)
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in requires) == ["httpx", "numpy", "websockets"]
