"""Neither torchaudio nor encodec is imported at run time (their wheels cannot load beside CPU torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"

SCRIPT = f"""
import sys, torch
import vocos_core, vocos_core.encodec, vocos_core.testing
from vocos_core import Vocos
from vocos_core.encodec.testing import write_random_encodec_weights
import tempfile
tmp = tempfile.mkdtemp()
mel = Vocos.from_pretrained({str(REFERENCE / "vocos-mel-tiny")!r})
mel(torch.randn(1, 4000)); mel.decode_batch([torch.randn(100, 5), torch.randn(100, 7)])
enc = Vocos.from_pretrained({str(REFERENCE / "vocos-encodec-tiny")!r},
                            encodec_weights=write_random_encodec_weights(tmp + "/e.th"))
enc(torch.randn(1, 4000), bandwidth_id=torch.tensor([1]))
import service.http.app
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torchaudio", "encodec"))
print("LOADED", loaded)
"""


def test_run_time_never_imports_torchaudio_or_encodec() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr
