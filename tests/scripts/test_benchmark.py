"""scripts/benchmark.py on tiny models: paired rounds, the reference's cases, the table.

The reference side needs its own venv (vocos 0.1.0), which tests never install; a stand-in worker
takes its place, so what is checked is the pairing and the arithmetic of the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from scripts_helpers import SCRIPTS, import_script

from vocos_core import Vocos, bf16x3


@pytest.fixture(scope="module")
def bench_module():
    return import_script("benchmark")


class StandInWorker:
    """Answers like bench_reference.py's worker: one time per request, always 1.0 s."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []

    def time(self, case: str, repeats: int) -> float:
        self.requests.append((case, repeats))
        return 1.0


def test_rounds_pair_every_reference_case(bench_module, mel_checkpoint: Path, encodec_checkpoint: Path,
                                          encodec_weights: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    mel = Vocos.from_pretrained(mel_checkpoint)
    enc = Vocos.from_pretrained(encodec_checkpoint, encodec_weights=encodec_weights)
    monkeypatch.setattr(bench_module, "time_call", lambda fn, repeats, device: (fn(), 0.5)[1])
    worker = StandInWorker()
    args = argparse.Namespace(device="cpu", repeats=2, rounds=3)
    ours, ref = bench_module.time_rounds(args, mel, enc, torch.float32, worker)
    assert set(ref) == set(bench_module.REFERENCE_CASES)  # every reference case is one of ours
    assert all(len(times) == 3 for times in ours.values()) and all(len(t) == 3 for t in ref.values())
    assert sorted(worker.requests) == sorted((case, 2) for case in bench_module.REFERENCE_CASES for _ in range(3))
    assert bench_module.FLOOR_CASE in ours and bench_module.FLOOR_CASE not in ref

    bench_module.print_table("float32", ours, ref)
    rows = {line[:50].strip(): line for line in capsys.readouterr().out.splitlines()}
    assert "2.00x" in rows["mel decode 10 s, batch 1"]  # 1.0 s reference / 0.5 s ours
    assert "x" not in rows["mel decode_batch 8 x 5-10 s (unequal), batch 8"][50:]  # no reference column


def test_reference_worker_knows_every_reference_case(bench_module) -> None:
    # bench_reference.py imports vocos, which only the reference venv has: check its case names as text.
    source = (SCRIPTS / "bench_reference.py").read_text()
    for case in bench_module.REFERENCE_CASES:
        assert f'"{case}"' in source


def test_bf16x3_is_timed_for_float32_on_cpu_only(bench_module) -> None:
    both = argparse.Namespace(device="cpu", cpu_matmuls=["float32", "bf16x3"])
    runs = ["float32", "bf16x3"] if bf16x3.unsupported_reason() is None else ["float32"]
    assert bench_module.cpu_matmuls(both, torch.float32) == runs
    assert bench_module.cpu_matmuls(both, torch.bfloat16) == ["float32"]
    assert bench_module.cpu_matmuls(argparse.Namespace(device="cuda", cpu_matmuls=["bf16x3"]), torch.float32) == [
        "float32"]


@pytest.mark.skipif(bf16x3.unsupported_reason() is not None, reason=f"bf16x3: {bf16x3.unsupported_reason()}")
def test_bf16x3_error_is_measured_against_float32_matmuls(bench_module, mel_checkpoint: Path) -> None:
    mel = Vocos.from_pretrained(mel_checkpoint)
    err = bench_module.reduced_precision_error(mel, torch.float32, "cpu", "bf16x3")
    assert 0 < err < 1e-4  # not float32 against itself, and within the parity tolerance
    assert bench_module.reduced_precision_error(mel, torch.float32, "cpu", "float32") == 0
