"""Shared by the tests of ``scripts/``: the scripts are not a package, so they are imported by path."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def import_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module; ``scripts/`` is on ``sys.path`` only while it imports (its siblings too)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPTS))
