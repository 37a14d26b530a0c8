"""Set-up of the tests of ``scripts/``."""

from __future__ import annotations

import sys
from pathlib import Path

# With --import-mode=importlib no test folder is on sys.path; the tests import `scripts_helpers`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
