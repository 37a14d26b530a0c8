"""scripts/benchmark.py on tiny models: paired rounds, the reference's and ONNX Runtime's cases,
the table, the matmul ways, the CPU peak.

The reference side needs its own venv (vocos 0.1.0, onnxruntime), which tests never install; a
stand-in worker takes its place, so what is checked is the pairing and the arithmetic of the report.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scripts_helpers import SCRIPTS, import_script

from vocos_core import Vocos, matmul_ways


@pytest.fixture(scope="module")
def bench_module():
    return import_script("benchmark")


class StandInWorker:
    """Answers like bench_reference.py's worker: one time per request, 1.0 s for the reference and
    0.25 s for ONNX Runtime, or no ONNX Runtime column at all (``onnx_missing``)."""

    def __init__(self, onnx_missing: str | None = None) -> None:
        self.requests: list[tuple[str, int]] = []
        self.onnx_missing = onnx_missing

    def time(self, case: str, repeats: int, statistic: str = "median") -> float:
        self.requests.append((case, repeats))
        return 0.25 if case.startswith("onnxruntime: ") else 1.0


@pytest.fixture(scope="module")
def models(mel_checkpoint: Path, encodec_checkpoint: Path, encodec_weights: Path) -> tuple[Vocos, Vocos]:
    return Vocos.from_pretrained(mel_checkpoint), Vocos.from_pretrained(encodec_checkpoint,
                                                                         encodec_weights=encodec_weights)


def test_rounds_pair_every_reference_and_onnx_case(bench_module, models: tuple[Vocos, Vocos],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench_module, "time_call", lambda fn, repeats, device, statistic: (fn(), 0.5)[1])
    worker = StandInWorker()
    args = argparse.Namespace(device="cpu", repeats=2, rounds=3, statistic="median")
    sides = bench_module.time_rounds(args, *models, torch.float32, worker)
    ours, ref, onnx = sides["ours"], sides["reference"], sides["onnxruntime"]
    assert set(ref) == set(onnx) == set(bench_module.REFERENCE_CASES)  # every reference case is one of ours
    assert all(len(t) == 3 for side in sides.values() for t in side.values())
    expected = [(prefix + case, 2) for case in bench_module.REFERENCE_CASES for prefix in ("", "onnxruntime: ")]
    assert sorted(worker.requests) == sorted(expected * 3)
    assert bench_module.FLOOR_CASE in ours and bench_module.FLOOR_CASE not in ref

    bench_module.print_table("float32", sides)
    rows = {line[:50].strip(): line for line in capsys.readouterr().out.splitlines()}
    assert "2.00x" in rows["mel decode 10 s, batch 1"]  # 1.0 s reference / 0.5 s ours
    assert "0.50x" in rows["mel decode 10 s, batch 1"]  # 0.25 s ONNX Runtime / 0.5 s ours
    assert "x" not in rows["mel decode_batch 8 x 5-10 s (unequal), batch 8"][50:]  # no other side


def test_without_onnxruntime_the_column_is_left_out(bench_module, models: tuple[Vocos, Vocos],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module, "time_call", lambda fn, repeats, device, statistic: 0.5)
    worker = StandInWorker(onnx_missing="onnxruntime is not installed in the reference venv")
    sides = bench_module.time_rounds(argparse.Namespace(device="cpu", repeats=1, rounds=2, statistic="min"), *models,
                                     torch.float32, worker)
    assert sides["onnxruntime"] == {} and set(sides["reference"]) == set(bench_module.REFERENCE_CASES)
    assert not any(case.startswith("onnxruntime: ") for case, _ in worker.requests)


def test_reference_worker_knows_every_reference_case(bench_module) -> None:
    # bench_reference.py imports vocos, which only the reference venv has: check its case names as text.
    source = (SCRIPTS / "bench_reference.py").read_text()
    for case in bench_module.REFERENCE_CASES:
        assert f'"{case}"' in source and f'ONNX_PREFIX + "{case}"' in source
    assert f'ONNX_PREFIX = "{bench_module.ONNX_PREFIX}"' in source


def test_every_way_that_runs_is_timed_for_float32_on_cpu_only(bench_module) -> None:
    every = argparse.Namespace(device="cpu", cpu_matmuls=[*matmul_ways.WAYS, "auto"])
    assert bench_module.cpu_matmuls(every, torch.float32) == [*matmul_ways.available(), "auto"]
    assert bench_module.cpu_matmuls(every, torch.bfloat16) == ["mkl"]
    assert bench_module.cpu_matmuls(argparse.Namespace(device="cuda", cpu_matmuls=["bf16x3"]), torch.float32) == [
        "mkl"]


@pytest.mark.parametrize("way", [w for w in matmul_ways.WAYS if w != "mkl"])
def test_each_ways_error_is_measured_against_float32_matmuls(bench_module, models: tuple[Vocos, Vocos],
                                                             way: matmul_ways.Way) -> None:
    if (reason := matmul_ways.unsupported_reason(way)) is not None:
        pytest.skip(f"{way}: {reason}")
    err = bench_module.matmul_error(models[0], torch.float32, "cpu", matmul_ways.Plan((way,)))
    assert err < 1e-5  # within the parity tolerance
    if way == "bf16x3":
        assert err > 0  # not mkl against itself (oneDNN may equal MKL on these tiny shapes)
    assert bench_module.matmul_error(models[0], torch.float32, "cpu", matmul_ways.Plan(("mkl",))) == 0


def test_auto_times_the_plan_the_server_would_pick(bench_module, models: tuple[Vocos, Vocos]) -> None:
    try:
        label = bench_module.set_matmuls("auto", list(models))
        plan = matmul_ways.current_plan()
        assert label == f"auto ({plan.name})" and set(plan.ways) <= set(matmul_ways.available())
        assert bench_module.set_matmuls("mkl", list(models)) == "mkl" and matmul_ways.current_plan().ways == ("mkl",)
    finally:
        matmul_ways.set_way("mkl")


def test_floor_flop_counts_every_linear_layer(bench_module, models: tuple[Vocos, Vocos]) -> None:
    mel = models[0]
    layers = [m for m in mel.modules() if isinstance(m, torch.nn.Linear)]
    assert bench_module.floor_flop(mel, 10) == sum(2 * 10 * m.in_features * m.out_features for m in layers)


def test_the_cpu_peak_is_cores_times_clock_times_flop_per_cycle() -> None:
    cpu_peak = import_script("cpu_peak")
    zen4 = {"Vendor ID": "AuthenticAMD", "CPU family": "25", "Flags": "fma avx2 avx512f"}
    assert cpu_peak.flop_per_cycle(zen4) == 32  # one 512-bit FMA a cycle, on two 256-bit units
    assert cpu_peak.flop_per_cycle({**zen4, "CPU family": "26"}) == 64  # Zen 5: two 512-bit FMAs
    assert cpu_peak.flop_per_cycle({"Vendor ID": "GenuineIntel", "Flags": "fma avx512f amx_tile"}) == 64
    assert cpu_peak.flop_per_cycle({"Flags": "fma avx2"}) == 32
    peak = cpu_peak.cpu_peak(1, ghz=3.0, flop=32)
    assert peak.gflops == 96 and "1 cores x 3.00 GHz x 32" in peak.describe()


def test_without_the_reference_the_table_has_no_empty_columns(bench_module, capsys) -> None:
    bench_module.print_table("float32", {"ours": {"mel decode 10 s, batch 1": [0.5, 0.5]}, "reference": {},
                                         "onnxruntime": {}})
    header = capsys.readouterr().out.splitlines()[2]
    assert header.split() == ["case", "ours", "s", "RTF", "x", "real-time"]


def test_only_float32_is_compared_with_the_float32_peak(bench_module, capsys) -> None:
    peak = import_script("cpu_peak").Peak(cores=1, ghz=1.0, flop_per_cycle=32, model="test CPU")
    bench_module.print_gflops([1.0], 16 * 10**9, peak, "float32")
    bench_module.print_gflops([1.0], 16 * 10**9, peak, "bfloat16")
    float32, bfloat16 = capsys.readouterr().out.splitlines()
    assert "16 GFLOP/s" in float32 and "50 % of the float32 peak" in float32
    assert "16 GFLOP/s" in bfloat16 and "%" not in bfloat16 and "does not apply" in bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA and a GPU")
def test_cuda_without_cuda_is_one_line(bench_module) -> None:
    result = subprocess.run([sys.executable, str(SCRIPTS / "benchmark.py"), "--device", "cuda"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [f"benchmark.py: {bench_module.device_missing('cuda')}"]
    assert "--device cuda needs a CUDA build of torch" in result.stderr


def test_cpu_peak_prints_the_peak_and_how_it_was_derived() -> None:
    result = subprocess.run([sys.executable, str(SCRIPTS / "cpu_peak.py"), "--threads", "1", "--ghz", "3",
                             "--flop-per-cycle", "32"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("float32 peak 96 GFLOP/s\n") and "1 cores x 3.00 GHz x 32" in result.stdout
    assert "clock --ghz" in result.stdout
    assert "--flop-per-cycle" in subprocess.run([sys.executable, str(SCRIPTS / "cpu_peak.py"), "--help"],
                                                capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA and a GPU (the run would go on)")
@pytest.mark.parametrize(("memory", "applied"), [([], 1), (["--memory", "server"], 1), (["--memory", "glibc"], 0)])
def test_ours_run_under_the_servers_memory_settings_unless_told(bench_module, monkeypatch: pytest.MonkeyPatch,
                                                                 memory: list[str], applied: int) -> None:
    """The server fixes glibc's thresholds (a 10 s decode took 25 000 page faults under its old setting): the
    benchmark times the model as the server runs it. Here the run stops at the missing GPU, after the setting."""
    calls: list[None] = []
    monkeypatch.setattr(bench_module, "bound_memory_growth", lambda: calls.append(None))
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "--device", "cuda", *memory])
    with pytest.raises(SystemExit):
        bench_module.main()
    assert len(calls) == applied
