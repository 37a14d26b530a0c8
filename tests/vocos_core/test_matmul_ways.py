"""The CPU matmul ways: accuracy, rows independent of the row count, weight changes, when each
applies, and the start-up choice between them."""

from __future__ import annotations

import time

import pytest
import torch
from linear_helpers import layer, rel_error

from vocos_core import matmul_ways
from vocos_core.testing import checkpoint_config, random_model

# Error bound against float64, relative to the largest output: float32 ways measure ~1e-7, bf16x3
# 3-4e-6 (tests/vocos_core/test_bf16x3.py).
ACCURACY = 1e-5
# The streaming chunks' row counts up to the backbone's MLP blocks, and odd ones.
ROWS = (1, 7, 16, 64, 256, 1030)


@pytest.mark.parametrize(("k", "n"), [(512, 1536), (1536, 512), (512, 1026), (33, 17)])
@pytest.mark.parametrize("bias", [True, False])
def test_every_way_is_accurate_at_every_row_count(matmul_way: matmul_ways.Way, k: int, n: int, bias: bool) -> None:
    lin = layer(k, n, bias)
    with torch.inference_mode():
        for rows in ROWS:
            x = torch.randn(rows, k)
            out = torch.empty(rows, n)
            matmul_ways.linear_into(matmul_ways.way_for(x), lin, x, out)
            assert rel_error(out, x, lin) < ACCURACY, rows
            assert rel_error(matmul_ways.linear(x.view(1, rows, k), lin).view(rows, n), x, lin) < ACCURACY


def test_every_row_is_the_same_whatever_the_row_count(matmul_way: matmul_ways.Way) -> None:
    # What keeps batched items equal to their solo decode, and lets one packed weight serve every caller.
    # Bit for bit, except MKL's own kernels for under 8 rows or so, which sum in another order.
    lin = layer(512, 1536)
    x = torch.randn(1100, 512)
    with torch.inference_mode():
        whole = matmul_ways.linear(x, lin)
        for start, end in ((0, 1), (3, 10), (3, 19), (100, 164), (0, 300), (50, 1074)):
            part, expected = matmul_ways.linear(x[start:end], lin), whole[start:end]
            if matmul_way == "mkl":
                assert float((part - expected).abs().max() / expected.abs().max()) < 1e-6, (start, end)
            else:
                assert torch.equal(part, expected), (start, end)


def test_the_way_is_the_one_set(matmul_way: matmul_ways.Way) -> None:
    with torch.inference_mode():
        assert matmul_ways.current() == matmul_way == matmul_ways.way_for(torch.zeros(2, 3))


def test_float32_ways_agree_with_plain_float32() -> None:
    lin, x = layer(512, 1536), torch.randn(300, 512)
    with torch.inference_mode():
        plain = lin(x)
        for way in matmul_ways.available():
            if way != "bf16x3":  # the others are float32 arithmetic in another order
                out = torch.empty_like(plain)
                matmul_ways.linear_into(way, lin, x, out)
                assert float((out - plain).abs().max() / plain.abs().max()) < 1e-6, way


@pytest.mark.skipif(matmul_ways.unsupported_reason("onednn") is not None, reason="no oneDNN in this PyTorch")
def test_a_changed_weight_is_packed_again() -> None:
    lin, x = layer(64, 32), torch.randn(5, 64)
    out = torch.empty(5, 32)
    with torch.inference_mode():
        matmul_ways.linear_into("onednn", lin, x, out)
    with torch.no_grad():
        lin.weight.mul_(2)  # in place: same storage, new version
    with torch.inference_mode():
        matmul_ways.linear_into("onednn", lin, x, out)
        assert rel_error(out, x, lin) < ACCURACY
    lin.load_state_dict(layer(64, 32, seed=1).state_dict())
    with torch.inference_mode():
        matmul_ways.linear_into("onednn", lin, x, out)
        assert rel_error(out, x, lin) < ACCURACY
    assert "_onednn_pack" not in lin.state_dict()


def test_autograd_and_other_dtypes_run_in_plain_pytorch(matmul_way: matmul_ways.Way) -> None:
    lin = layer(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    assert matmul_ways.way_for(x) == "mkl"
    matmul_ways.linear(x, lin).sum().backward()  # neither oneDNN's operator nor the kernels have a backward
    assert x.grad is not None
    with torch.inference_mode():
        assert matmul_ways.way_for(torch.zeros(2, 16, dtype=torch.bfloat16)) == "mkl"


def test_setting_a_way_sets_the_precision_it_goes_with() -> None:
    for way in matmul_ways.available():
        matmul_ways.set_way(way)
        assert torch.get_float32_matmul_precision() == ("high" if way == "bf16x3" else "highest")
    matmul_ways.set_way("mkl")
    torch.set_float32_matmul_precision("high")  # directly, as callers did before the ways
    try:
        expected = "bf16x3" if matmul_ways.unsupported_reason("bf16x3") is None else "mkl"
        assert matmul_ways.current() == expected
    finally:
        torch.set_float32_matmul_precision("highest")


def test_choose_times_the_ways_that_run_and_names_the_others() -> None:
    layers = [(layer(512, 1536), True), (layer(1536, 512, seed=1), False), layer(512, 1026, seed=2)]
    start = time.perf_counter()
    choice = matmul_ways.choose(layers)
    took = time.perf_counter() - start
    assert set(choice.relative) == set(matmul_ways.available())
    assert set(choice.unavailable) == set(matmul_ways.WAYS) - set(matmul_ways.available())
    assert choice.rows == matmul_ways.PROBE_ROWS
    for i, rows in enumerate(choice.rows):  # each probed row count runs a way that was fastest there
        if choice.plan.ways != ("bf16x3",):
            way = choice.plan.way(rows)
            assert choice.relative[way][i] == min(r[i] for w, r in choice.relative.items() if w != "bf16x3")
    line = choice.describe()
    assert "\n" not in line and line.startswith(choice.plan.name) and all(w in line for w in matmul_ways.WAYS)
    assert took < 10, took  # about 0.7 s on 2 idle cores; generous for a shared CI machine
    assert torch.get_float32_matmul_precision() == "highest"  # the probe leaves the precision as it was


def fake_probe(times: dict[str, tuple[float, ...]]) -> object:
    """A stand-in for matmul_ways._probe: each way's time at each of PROBE_ROWS."""
    return lambda way, layers, rows, repeats: times[way][matmul_ways.PROBE_ROWS.index(rows)]


def test_choose_plans_the_fastest_exact_way_per_row_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matmul_ways, "unsupported_reason", lambda way: None)
    monkeypatch.setattr(matmul_ways, "_probe", fake_probe(
        {"mkl": (1.3, 1.0, 1.0, 1.0), "onednn": (1.0, 1.1, 1.2, 1.2), "bf16x3": (1.2, 1.2, 1.2, 1.2)}))
    choice = matmul_ways.choose([layer(8, 8)])
    assert choice.plan == matmul_ways.Plan(("onednn", "mkl"), (32,))  # 32: between the 16 and 64 probes
    assert choice.relative["mkl"] == (1.3, 1.0, 1.0, 1.0)
    assert choice.describe().startswith("onednn<=32,mkl (probe time relative to the fastest at 16/64/256/1024 rows: ")
    monkeypatch.setattr(matmul_ways, "_probe", fake_probe(
        {"mkl": (1.0, 2.0, 2.0, 1.0), "onednn": (2.0, 1.0, 1.0, 2.0), "bf16x3": (3.0, 3.0, 3.0, 3.0)}))
    assert matmul_ways.choose([layer(8, 8)]).plan == matmul_ways.Plan(("mkl", "onednn", "mkl"), (32, 512))


def test_bf16x3_is_chosen_for_every_row_count_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matmul_ways, "unsupported_reason", lambda way: None)
    monkeypatch.setattr(matmul_ways, "_probe", fake_probe(
        {"mkl": (1.0, 1.3, 1.3, 1.3), "onednn": (1.1, 1.2, 1.2, 1.2), "bf16x3": (1.2, 1.0, 1.0, 1.0)}))
    assert matmul_ways.choose([layer(8, 8)]).plan == matmul_ways.Plan(("bf16x3",))
    monkeypatch.setattr(matmul_ways, "_probe", fake_probe(
        {"mkl": (1.0, 1.0, 1.3, 1.3), "onednn": (1.1, 1.1, 1.2, 1.2), "bf16x3": (1.4, 1.4, 1.0, 1.0)}))
    assert matmul_ways.choose([layer(8, 8)]).plan == matmul_ways.Plan(("mkl", "onednn"), (128,))


def test_a_plan_runs_each_row_count_its_way() -> None:
    plan = matmul_ways.Plan(("onednn", "mkl"), (32,))
    assert [plan.way(r) for r in (1, 32, 33, 5000)] == ["onednn", "onednn", "mkl", "mkl"]
    assert plan.name == "onednn<=32,mkl" and matmul_ways.Plan(("mkl",)).name == "mkl"
    for bad in [(("mkl", "onednn"), ()), (("mkl", "onednn", "mkl"), (64, 32)), (("bf16x3", "mkl"), (32,))]:
        with pytest.raises(AssertionError):
            matmul_ways.Plan(*bad)  # type: ignore[arg-type]


@pytest.mark.skipif(matmul_ways.unsupported_reason("onednn") is not None, reason="no oneDNN in this PyTorch")
def test_a_split_plan_keeps_batched_items_and_streams_within_1e5_of_solo_decodes() -> None:
    """Items alone run below the split, the batch above it: two float32 summation orders."""
    model = random_model(checkpoint_config("mel", dim=64, num_layers=2))
    mels = torch.randn(3, 100, 40)
    try:
        matmul_ways.set_plan(matmul_ways.Plan(("onednn", "mkl"), (48,)))
        with torch.inference_mode():
            assert matmul_ways.way_for(mels[:1].transpose(1, 2)) == "onednn"
            assert matmul_ways.way_for(mels.transpose(1, 2)) == "mkl"
            batch = model.decode(mels)
            for item in range(3):
                solo = model.decode(mels[item : item + 1])[0]
                assert float((batch[item] - solo).abs().max() / solo.abs().max()) <= 1e-5
                stream = model.stream()
                chunks = [stream.push(mels[item, :, i : i + 7]) for i in range(0, 40, 7)] + [stream.flush()]
                streamed = torch.cat(chunks, dim=-1)
                assert float((streamed - solo).abs().max() / solo.abs().max()) <= 1e-5
    finally:
        matmul_ways.set_way("mkl")


def test_resolve_forces_falls_back_and_needs_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    layers = [layer(32, 64)]
    mkl = matmul_ways.Plan(("mkl",))
    assert matmul_ways.resolve("mkl", layers) == (mkl, "mkl (forced by the cpu_matmul setting)")
    assert matmul_ways.resolve("float32", layers)[0] == mkl  # the setting's old name
    assert matmul_ways.resolve("auto", [])[0] == mkl
    real = matmul_ways.unsupported_reason
    monkeypatch.setattr(matmul_ways, "unsupported_reason", lambda w: "not here" if w == "onednn" else real(w))
    plan, why = matmul_ways.resolve("onednn", layers)
    assert "onednn" not in plan.ways and why.endswith("as onednn cannot run: not here")
    assert set(matmul_ways.resolve("auto", layers)[0].ways) <= set(matmul_ways.available())


def test_resolve_leaves_out_an_excluded_way_forced_or_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16x3's precision "high" also turns on TF32 for float32 models on a GPU (the service excludes it
    there); even where it would win the probe, or is forced, an excluded way is not chosen, and the line says why."""
    monkeypatch.setattr(matmul_ways, "unsupported_reason", lambda way: None)
    monkeypatch.setattr(matmul_ways, "_probe", fake_probe(
        {"mkl": (1.0, 1.3, 1.3, 1.3), "onednn": (1.1, 1.2, 1.2, 1.2), "bf16x3": (0.5, 0.5, 0.5, 0.5)}))
    excluded: dict[matmul_ways.Way, str] = {"bf16x3": "a GPU model would run TF32"}
    plan, why = matmul_ways.resolve("auto", [layer(8, 8)], excluded)
    assert "bf16x3" not in plan.ways and why.endswith("; bf16x3 left out: a GPU model would run TF32")
    plan, why = matmul_ways.resolve("bf16x3", [layer(8, 8)], excluded)
    assert "bf16x3" not in plan.ways and why.endswith("as bf16x3 cannot run: a GPU model would run TF32")
    assert matmul_ways.resolve("auto", [layer(8, 8)])[0] == matmul_ways.Plan(("bf16x3",))  # without: it wins


def test_the_fused_gelu_is_the_exact_gelu_of_the_matmul(matmul_way: matmul_ways.Way) -> None:
    lin = torch.nn.Linear(48, 40)
    with torch.inference_mode():
        for rows in ROWS:
            x = torch.randn(rows, 48)
            out = torch.empty(rows, 40)
            matmul_ways.linear_gelu_into(matmul_way, lin, x, out)
            expected = torch.nn.functional.gelu(x.double() @ lin.weight.double().t() + lin.bias.double())
            assert float((out.double() - expected).abs().max() / expected.abs().max()) < ACCURACY, rows


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_one_half_precision_row_equals_that_row_among_others(dtype: torch.dtype) -> None:
    # PyTorch multiplies one bfloat16 row as a matrix-vector product, rounding a few outputs otherwise.
    lin = layer(1536, 512).to(dtype)
    x = torch.randn(64, 1536).to(dtype)
    with torch.inference_mode():
        full = matmul_ways.linear(x, lin)
        for i in range(x.shape[0]):
            assert torch.equal(matmul_ways.linear(x[i:i + 1].clone(), lin), full[i:i + 1]), i
            out = torch.empty(1, 512, dtype=dtype)
            matmul_ways.linear_into("mkl", lin, x[i:i + 1].clone(), out)
            assert torch.equal(out, full[i:i + 1]), i
