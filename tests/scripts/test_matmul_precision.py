"""scripts/matmul_precision.py on tiny shapes: the bf16 split, the float32-out bf16x3 route, the report."""

from __future__ import annotations

import sys

import pytest
import torch
from scripts_helpers import import_script

from vocos_core import bf16x3


@pytest.fixture(scope="module")
def probe():
    return import_script("matmul_precision")


def test_split_is_two_bf16_values_summing_to_x(probe) -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 10.0 ** torch.linspace(-3, 3, 1000)
    hi, lo = probe.split_bf16(x)
    assert torch.equal(hi, hi.bfloat16().float()) and torch.equal(lo, lo.bfloat16().float())
    assert bool(((x - hi - lo).abs() <= 2.0**-16 * x.abs()).all())  # 16 of float32's 24 bits
    assert bool(((x - hi).abs() > 2.0**-16 * x.abs()).any())  # hi alone is not enough


def test_bf16x3_linear_is_far_closer_than_bf16_and_restores_the_setting(probe) -> None:
    gen = torch.Generator().manual_seed(1)
    a, w, b = torch.randn(24, 64, generator=gen), torch.randn(40, 64, generator=gen), torch.randn(40, generator=gen)
    exact = a.double() @ w.double().T + b.double()
    before = torch.backends.mkldnn.matmul.fp32_precision
    with torch.inference_mode():
        out = probe.Bf16x3Linear(w, b)(a)
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    bf16 = (a.bfloat16() @ w.bfloat16().T).float() + b

    def rel(y: torch.Tensor) -> float:
        return float((y.double() - exact).abs().max() / exact.abs().max())
    assert out.shape == (24, 40) and out.dtype == torch.float32
    assert rel(out) < rel(bf16) / 50


def test_report_has_the_four_ways(probe, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["matmul_precision.py", "--frames", "16", "--dim", "32",
                                      "--intermediate", "64", "--rounds", "2"])
    probe.main()
    # The name fills the first 16 columns (it has a space in it); ms, speed-up and error follow.
    rows = {line[:16].strip(): line[16:].split() for line in capsys.readouterr().out.splitlines()[2:]}
    kernels = {"bf16x3 kernels"} if bf16x3.unsupported_reason() is None else set()
    assert set(rows) == {"float32", "bf16", "bf16x3 onednn", "bf16x3 native"} | kernels
    assert rows["float32"][1] == "1.00x"
    errors = {name: float(cols[-1]) for name, cols in rows.items()}
    assert errors["float32"] < errors["bf16x3 onednn"] * 2 < errors["bf16"]
    assert errors["bf16x3 native"] > 10 * errors["bf16x3 onednn"]  # bf16 outputs: rounded
    if kernels:
        assert errors["float32"] < errors["bf16x3 kernels"] < errors["bf16"] / 50
    assert torch.get_float32_matmul_precision() == "highest"
