"""``vocos_client`` imports in a process where the server's dependencies cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "blocked: torch is blocked in this test" in result.stdout  # the blocker works
    assert "loaded: []" in result.stdout
