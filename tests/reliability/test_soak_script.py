"""scripts/soak.py: its answer check tells a request's own audio from any other, and a short run
against a real server completes with every response matched."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from vocos_core import Vocos, matmul_ways

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def wav32(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, 24000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_the_check_accepts_only_the_requests_own_audio(soak: ModuleType, mel_checkpoint: Path) -> None:
    model = Vocos.from_pretrained(str(mel_checkpoint)).eval()
    rng = np.random.default_rng(0)
    own, other, longer = (torch.from_numpy(rng.standard_normal((100, t)).astype(np.float32) - 2) for t in (30, 30, 31))
    with torch.inference_mode():
        expected, swapped, shifted = (model.decode(x[None])[0].numpy() for x in (own, other, longer))
    assert soak.check_audio(wav32(expected), expected) is None
    assert "max abs error" in soak.check_audio(wav32(swapped), expected)  # same length, another request
    assert "shape" in soak.check_audio(wav32(shifted), expected)
    nudged = expected + 1e-3 * float(np.max(np.abs(expected)))
    assert "max abs error" in soak.check_audio(wav32(nudged), expected)
    assert "not a WAV" in soak.check_audio(b"{}", expected)


def test_queue_depth_sums_the_models(soak: ModuleType) -> None:
    text = 'vocos_queue_depth{model="mel"} 3.0\nvocos_queue_depth{model="encodec"} 4.0\nvocos_ready 1.0\n'
    assert soak.queue_depth(text) == 7.0


@pytest.mark.slow
@pytest.mark.parametrize("cpu_matmul", [
    pytest.param("bf16x3", marks=pytest.mark.skipif(matmul_ways.unsupported_reason("bf16x3") is not None,
                                                    reason=f"bf16x3: {matmul_ways.unsupported_reason('bf16x3')}")),
    "onednn", "float32"])
def test_a_short_soak_matches_every_response(soak: ModuleType, capsys: pytest.CaptureFixture[str],
                                             cpu_matmul: str) -> None:
    soak.main(["--clients", "4", "--duration", "4", "--warmup", "1", "--pool", "16", "--dim", "32", "--layers", "1",
               "--cpu-matmul", cpu_matmul])
    out = capsys.readouterr().out
    served = int(re.search(r"requests served\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert served > 0
    assert re.search(r"5xx responses\s+0 ", out)
    assert re.search(rf"matched own request\s+{served} of {served} ", out)
    assert re.search(r"server exit on SIGTERM\s+0 ", out)

