"""The engine and the serving layer import nothing of the HTTP layer or its web framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib, pkgutil, sys
import service.engine, service.runtime
for package in (service.engine, service.runtime):
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
web = sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette", "uvicorn")
             or m == "service.http" or m.startswith("service.http."))
print("\\n".join(web))
"""


def test_engine_and_runtime_import_no_web_framework() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"imported by service.engine / service.runtime: {result.stdout.split()}"
