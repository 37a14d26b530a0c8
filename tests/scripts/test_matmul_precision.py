"""scripts/matmul_precision.py on tiny shapes: the bf16 split, the float32-out bf16x3 route, the report."""

from __future__ import annotations

import sys

import pytest
import torch
from scripts_helpers import import_script

from vocos_core import bf16x3

# oneDNN's bf16 maths mode keeps float32 accumulation of bf16 products on AMX CPUs only; elsewhere
# (AVX512-BF16 without AMX, e.g. AMD Zen 4/5) it does not round the activations to bf16, and the
# script leaves that route out (onednn_unrounded_reason).
needs_amx = pytest.mark.skipif(
    not torch.cpu._is_amx_tile_supported(),
    reason="oneDNN's bf16 maths mode is as precise as bf16x3 only on CPUs with AMX; this CPU has none",
)


@pytest.fixture(scope="module")
def probe():
    return import_script("matmul_precision")


def test_split_is_two_bf16_values_summing_to_x(probe) -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 10.0 ** torch.linspace(-3, 3, 1000)
    hi, lo = probe.split_bf16(x)
    assert torch.equal(hi, hi.bfloat16().float()) and torch.equal(lo, lo.bfloat16().float())
    assert bool(((x - hi - lo).abs() <= 2.0**-16 * x.abs()).all())  # 16 of float32's 24 bits
    assert bool(((x - hi).abs() > 2.0**-16 * x.abs()).any())  # hi alone is not enough


def _linear_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    a, w, b = torch.randn(24, 64, generator=gen), torch.randn(40, 64, generator=gen), torch.randn(40, generator=gen)
    return a, w, b, a.double() @ w.double().T + b.double()


def _rel(y: torch.Tensor, exact: torch.Tensor) -> float:
    return float((y.double() - exact).abs().max() / exact.abs().max())


def test_bf16x3_linear_returns_float32_and_restores_the_setting(probe) -> None:
    a, w, b, exact = _linear_case()
    before = torch.backends.mkldnn.matmul.fp32_precision
    with torch.inference_mode():
        out = probe.Bf16x3Linear(w, b)(a)
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    assert out.shape == (24, 40) and out.dtype == torch.float32
    assert _rel(out, exact) < 2e-2  # a bf16-sized error at worst, on every CPU


@needs_amx
def test_bf16x3_linear_is_far_closer_than_bf16_on_amx(probe) -> None:
    a, w, b, exact = _linear_case()
    with torch.inference_mode():
        out = probe.Bf16x3Linear(w, b)(a)
    bf16 = (a.bfloat16() @ w.bfloat16().T).float() + b
    assert _rel(out, exact) < _rel(bf16, exact) / 50


def _report(probe, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    monkeypatch.setattr(sys, "argv", ["matmul_precision.py", "--frames", "16", "--dim", "32",
                                      "--intermediate", "64", "--rounds", "2"])
    probe.main()
    # The name fills the first 16 columns (it has a space in it); ms, speed-up and error follow.
    rows, _, notes = capsys.readouterr().out.partition("\n\n")  # the table, then a blank line before any note
    table = {line[:16].strip(): line[16:].split() for line in rows.splitlines()[2:]}
    return {**table, **({"notes": [notes]} if notes else {})}


def test_report_has_the_four_ways(probe, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _report(probe, monkeypatch, capsys)
    notes = rows.pop("notes", [""])[0]
    kernels = {"bf16x3 kernels"} if bf16x3.unsupported_reason() is None else set()
    onednn = {"bf16x3 onednn"} if probe.onednn_unrounded_reason() is None else set()
    assert set(rows) == {"float32", "bf16", "bf16x3 native"} | onednn | kernels
    assert ("bf16x3 onednn: left out: " in notes) is not bool(onednn), notes
    assert rows["float32"][1] == "1.00x"
    errors = {name: float(cols[-1]) for name, cols in rows.items()}
    assert errors["float32"] < 1e-5 < errors["bf16"]
    assert max(errors.values()) == max(errors["bf16"], errors["bf16x3 native"])  # no way worse than bf16 outputs
    if kernels:
        assert errors["float32"] < errors["bf16x3 kernels"] < errors["bf16"] / 50
    if onednn:  # printed only where it keeps bf16x3's precision (it was 2.5e-3 on AMD EPYC without AMX)
        assert errors["bf16x3 onednn"] < 1e-4
    assert torch.get_float32_matmul_precision() == "highest"


@needs_amx
def test_report_onednn_route_keeps_bf16x3_precision_on_amx(
    probe, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = {name: float(cols[-1]) for name, cols in _report(probe, monkeypatch, capsys).items()}
    assert errors["float32"] < errors["bf16x3 onednn"] * 2 < errors["bf16"]
    assert errors["bf16x3 native"] > 10 * errors["bf16x3 onednn"]  # bf16 outputs: rounded


def test_the_onednn_route_is_left_out_exactly_where_it_is_wrong(probe) -> None:
    a, w, b, exact = _linear_case()
    with torch.inference_mode():
        precise = _rel(probe.Bf16x3Linear(w, b)(a), exact) < 1e-4
    assert (probe.onednn_unrounded_reason() is None) is precise


def test_a_left_out_onednn_route_is_one_line(probe, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(probe, "onednn_unrounded_reason", lambda: "left out: a stand-in reason")
    rows = _report(probe, monkeypatch, capsys)
    notes = rows["notes"][0].splitlines()
    assert "bf16x3 onednn" not in rows and notes.count("bf16x3 onednn: left out: a stand-in reason") == 1
    assert len([n for n in notes if n.startswith("bf16x3 onednn")]) == 1


def test_kernels_that_cannot_run_are_left_out_in_one_line(probe, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # The docs' table has five ways; where the kernels cannot run (no AMX) the table had four rows or
    # fewer and said nothing of the fifth.
    monkeypatch.setattr(probe.bf16x3, "unsupported_reason", lambda: "a stand-in reason")
    rows = _report(probe, monkeypatch, capsys)
    assert "bf16x3 kernels" not in rows
    assert "bf16x3 kernels: left out: a stand-in reason" in rows["notes"][0].splitlines()
