"""Ways of running the linear layers' float32 matmuls on CPU, and the choice of one per CPU.

- ``mkl``: ``torch.addmm``, PyTorch's own BLAS (MKL in the x86 wheels; cuBLAS on a GPU). MKL picks
  its code path by CPU vendor; on AMD it is not the fastest float32 GEMM the CPU can run.
- ``onednn``: oneDNN's float32 inner product (``torch.ops.mkldnn._linear_pointwise``), shipped inside
  PyTorch, on a weight reordered once into oneDNN's blocked layout. The same float32 arithmetic as
  ``mkl`` (only the summation order differs, ~1e-6 relative); faster on every CPU measured, most on
  small row counts (docs/performance.md).
- ``bf16x3``: our AMX kernels (:mod:`vocos_core.bf16x3`), about 16 significand bits, on CPUs with AMX.

One :class:`Plan` serves the whole process: the way for each matmul by its row count, since the
fastest way can change with it (on an AVX2 AMD EPYC, oneDNN wins at 16 rows and MKL from 64 on;
docs/performance.md). ``bf16x3`` is never mixed with the others: it goes with PyTorch's float32 matmul
precision "high" or "medium" (what it implements), the others with "highest". :func:`choose` probes the
ways on the model's own layers as they run; :func:`set_way` forces one way for every row count.

oneDNN and bf16x3 compute each output row from its input row alone, bit for bit whatever the number
of rows (tested), so batched items equal their solo decode and one prepacked weight serves any row
count (whole decodes, streaming chunks); MKL does too except for a few rows (~1e-6 apart). Where a plan
switches ways at a row count, a row's output differs between the two sides of it as two float32
summation orders do (~1e-6 relative), well inside the 1e-5 that batching and streaming keep (tested).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from . import bf16x3, shape_buckets

Way = Literal["mkl", "onednn", "bf16x3"]
WAYS: tuple[Way, ...] = ("mkl", "onednn", "bf16x3")
# The service setting: a way, or ``auto`` (choose); ``float32`` is the name ``mkl`` had before.
CpuMatmul = Literal["auto", "mkl", "onednn", "bf16x3", "float32"]
ALIASES: dict[str, Way] = {"float32": "mkl"}
# Rows per probed matmul: streaming chunks (16..256 frames) up to the backbone's MLP blocks (1024).
PROBE_ROWS = (16, 64, 256, 1024)


@dataclass(frozen=True)
class Plan:
    """The way for each row count: ``ways[i]`` for matmuls of at most ``limits[i]`` rows, the last way
    above the last limit; one way and no limits serves every row count."""

    ways: tuple[Way, ...]
    limits: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        assert len(self.limits) == len(self.ways) - 1 and list(self.limits) == sorted(set(self.limits)), self
        assert "bf16x3" not in self.ways or self.ways == ("bf16x3",), self  # its precision is the process's

    def way(self, rows: int) -> Way:
        """The way a matmul of ``rows`` rows runs."""
        return next((w for w, limit in zip(self.ways, self.limits, strict=False) if rows <= limit), self.ways[-1])

    @property
    def name(self) -> str:
        """``mkl``, or ``onednn<=32,mkl`` (oneDNN up to 32 rows, MKL above): for logs, /models, metrics."""
        bounded = [f"{w}<={limit}" for w, limit in zip(self.ways, self.limits, strict=False)]
        return ",".join([*bounded, self.ways[-1]])


_plan = Plan(("mkl",))


def unsupported_reason(way: Way) -> str | None:
    """None when ``way`` can run on this machine, else why it cannot."""
    if way == "bf16x3":
        return bf16x3.unsupported_reason()
    if way == "onednn" and not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                                                  "_linear_pointwise")):
        return "this PyTorch build has no oneDNN (mkldnn) linear operator"
    return None


def available() -> list[Way]:
    """The ways that can run here, in :data:`WAYS` order."""
    return [way for way in WAYS if unsupported_reason(way) is None]


def set_way(way: Way) -> None:
    """Run every float32 matmul on CPU as ``way`` from now on; it must be :func:`available`."""
    set_plan(Plan((way,)))


def set_plan(plan: Plan) -> None:
    """Run float32 matmuls on CPU as ``plan`` says from now on; its ways must be :func:`available`.

    Sets PyTorch's float32 matmul precision too: "high" for bf16x3, else "highest". Call it only for
    CPU models: on a GPU "high" means TF32.
    """
    global _plan
    assert all(unsupported_reason(w) is None for w in plan.ways), plan
    _plan = plan
    torch.set_float32_matmul_precision("high" if plan.ways == ("bf16x3",) else "highest")


def current(rows: int = PROBE_ROWS[-1]) -> Way:
    """The way a float32 CPU matmul of ``rows`` rows runs now: ``bf16x3`` wherever the precision allows
    it and it can run (also when the precision was set directly, as before ways existed), else the
    plan's way."""
    if torch.get_float32_matmul_precision() != "highest" and bf16x3.unsupported_reason() is None:
        return "bf16x3"
    way = _plan.way(rows)
    return "mkl" if way == "bf16x3" else way  # bf16x3, then precision "highest" again: exact float32


def current_plan() -> Plan:
    """The plan set last (:func:`set_plan`)."""
    return _plan


def autograd_path(x: torch.Tensor) -> bool:
    """Whether operators on ``x`` must be PyTorch's own, with no in-place updates or ``out=``: while
    autograd records (those have no backward, nor do oneDNN's operator and our kernels) or autocast
    casts (it casts PyTorch's operators only, and ``out=`` would not follow its dtypes)."""
    return torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type)


def way_for(x: torch.Tensor, rows: int | None = None) -> Way:
    """The way a linear layer on ``x`` ``(..., K)`` runs, in matmuls of ``rows`` rows (default: all of
    ``x``'s): :func:`current` for float32 CPU inputs off the :func:`autograd_path`, ``mkl`` (PyTorch's
    own) otherwise."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or autograd_path(x):
        return "mkl"
    return current(x.numel() // max(x.shape[-1], 1) if rows is None else rows)


@dataclass(frozen=True)
class OnednnWeight:
    """An ``(N, K)`` weight in oneDNN's blocked layout; any row count reuses it."""

    packed: torch.Tensor  # opaque mkldnn tensor
    key: tuple[int, int]  # the weight's (data_ptr, version) when packed


def onednn_weight(layer: nn.Linear) -> torch.Tensor:
    """``layer``'s reordered weight, made again whenever the weight changed (``load_state_dict``, ``copy_``).

    Kept on the layer itself, so every caller of the layer (whole decodes, streaming chunks) shares it.
    """
    pack: OnednnWeight | None = getattr(layer, "_onednn_pack", None)
    key = bf16x3.weight_key(layer.weight)
    if pack is None or pack.key != key:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach().contiguous())
        pack = OnednnWeight(packed, key)
        object.__setattr__(layer, "_onednn_pack", pack)  # a plain attribute: state_dict never sees it
    return pack.packed


def _onednn(x: torch.Tensor, layer: nn.Linear, gelu: bool = False) -> torch.Tensor:
    """``layer(x)`` for ``x`` ``(M, K)`` contiguous, through oneDNN -> ``(M, N)`` contiguous; ``gelu``:
    the exact (erf) GELU of it, applied by oneDNN as the matmul writes its output.

    The rows are padded to a :func:`~vocos_core.shape_buckets.bucket` with zero rows, whose outputs
    are dropped: each row's output depends on that row alone, and oneDNN compiles a kernel per shape.
    """
    bias = None if layer.bias is None else layer.bias.detach()
    rows = x.shape[0]
    padded = shape_buckets.bucket(rows)
    if padded != rows:
        x = torch.cat([x, x.new_zeros(padded - rows, x.shape[1])])
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")  # "none": erf, not the tanh approximation
    return torch.ops.mkldnn._linear_pointwise(x, onednn_weight(layer), bias, attr, [], algorithm)[:rows]


def linear_into(way: Way, layer: nn.Linear, x: torch.Tensor, out: torch.Tensor,
                scratch: torch.Tensor | None = None) -> None:
    """``out[:] = layer(x)`` as ``way`` (:func:`way_for` ``x``), ``x`` ``(M, K)`` -> ``out`` ``(M, N)``;
    ``scratch``: bf16x3's (:func:`bf16x3.scratch_size`), else allocated there."""
    if way == "bf16x3":
        bf16x3.linear_into(x, layer, out, scratch)
    elif way == "onednn":
        # The operator has no out= form; the copy costs less than oneDNN gains (docs/performance.md).
        out.copy_(_onednn(x.contiguous(), layer))
    elif one_half_precision_row(x):
        out.copy_(_two_rows_linear(x, layer))
    elif layer.bias is None:
        torch.mm(x, layer.weight.t(), out=out)
    else:
        torch.addmm(layer.bias, x, layer.weight.t(), out=out)


def linear_gelu_into(way: Way, layer: nn.Linear, x: torch.Tensor, out: torch.Tensor,
                     scratch: torch.Tensor | None = None) -> None:
    """``out[:] = gelu(layer(x))`` (exact GELU) as ``way``; oneDNN fuses the GELU into the matmul,
    sparing a pass over ``out`` (docs/performance.md), the others run it after."""
    if way == "onednn":
        out.copy_(_onednn(x.contiguous(), layer, gelu=True))
    else:
        linear_into(way, layer, x, out, scratch)
        torch.ops.aten.gelu_(out)


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` for ``x`` ``(..., K)`` -> ``(..., N)``, as :func:`way_for` ``x``."""
    way = way_for(x)
    if way == "mkl":
        return _two_rows_linear(x, layer).view(*x.shape[:-1], layer.out_features) if one_half_precision_row(x) \
            else layer(x)
    rows = x.reshape(-1, x.shape[-1]).contiguous()  # (..., K) -> (M, K), a view for contiguous x
    if way == "onednn":
        return _onednn(rows, layer).view(*x.shape[:-1], layer.out_features)
    return bf16x3.linear(x, layer)


def one_half_precision_row(x: torch.Tensor) -> bool:
    """Whether ``x`` is a single bfloat16/float16 row on CPU, which PyTorch multiplies as a matrix-vector
    product: its float32 sums round to the half dtype otherwise than the same row's among others, an ulp
    that the backbone grows (a stream stepping one frame would not equal its decode)."""
    return x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu" and x.numel() == x.shape[-1]


def _two_rows_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` ``(1, N)`` of one row, as a matrix product of two rows (the row twice), as any other
    row count runs."""
    return nn.functional.linear(x.reshape(1, -1).expand(2, -1), layer.weight, layer.bias)[:1]


# A linear layer to probe, and whether the model applies the exact GELU to its output (the ConvNeXt
# MLP's first layer, :func:`linear_gelu_into`), so that each way is timed as the model runs it.
ProbeLayer = tuple[nn.Linear, bool]


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` picked, and why: each way's probe time relative to the fastest (1.0) at each
    of ``rows``."""

    plan: Plan
    rows: tuple[int, ...]
    relative: dict[Way, tuple[float, ...]]
    unavailable: dict[Way, str]

    def describe(self) -> str:
        """One line for the start-up log."""
        times = ", ".join(f"{way} {'/'.join(f'{r:.2f}' for r in rel)}" for way, rel in self.relative.items())
        skipped = "".join(f"; {way} cannot run: {why}" for way, why in self.unavailable.items())
        rows = "/".join(map(str, self.rows))
        return f"{self.plan.name} (probe time relative to the fastest at {rows} rows: {times}{skipped})"


def choose(layers: Iterable[nn.Linear | ProbeLayer], candidates: Sequence[Way] = WAYS,
           rows: Sequence[int] = PROBE_ROWS, repeats: int = 3) -> Choice:
    """The fastest plan of ``candidates`` that can run, timed on the distinct layers of ``layers``
    (a plain layer: no GELU) at each row count of ``rows``; it does not :func:`set_plan` it.

    bf16x3 serves every row count or none: it is chosen where its mean time relative to the fastest
    way is the lowest. Otherwise each row count takes its fastest exact way, up to the geometric middle
    between it and the next probed row count. About 0.7 s for the mel model's layers on a 2-core CPU.
    """
    unavailable = {w: r for w in candidates if (r := unsupported_reason(w)) is not None}
    ways = [w for w in candidates if w not in unavailable]
    assert ways, unavailable
    probes = [(layer, False) if isinstance(layer, nn.Linear) else layer for layer in layers]
    distinct = list({(lin.in_features, lin.out_features, gelu): (lin, gelu) for lin, gelu in probes}.values())
    for w in ways:  # a first pass of everything: packs weights, compiles kernels, starts thread pools
        for n in rows:
            _probe(w, distinct, n, repeats=0)
    # Rounds that time every way at every row count in turn, so a drift in clock or load (the probe
    # runs right after the models load) reaches every way alike; each keeps its fastest round.
    times = {w: [float("inf")] * len(rows) for w in ways}
    for _ in range(repeats):
        for i, n in enumerate(rows):
            for w in ways:
                times[w][i] = min(times[w][i], _probe(w, distinct, n, repeats=1))
    best = [min(times[w][i] for w in ways) for i in range(len(rows))]
    relative = {w: tuple(t / b for t, b in zip(times[w], best, strict=True)) for w in ways}
    mean = {w: sum(rel) / len(rel) for w, rel in relative.items()}
    exact = [w for w in ways if w != "bf16x3"]
    if not exact or min(ways, key=lambda w: mean[w]) == "bf16x3":
        return Choice(Plan(("bf16x3",)), tuple(rows), relative, unavailable)
    return Choice(_fastest_per_row_count(exact, relative, rows), tuple(rows), relative, unavailable)


def _fastest_per_row_count(ways: Sequence[Way], relative: dict[Way, tuple[float, ...]],
                           rows: Sequence[int]) -> Plan:
    """The plan that runs each of ``rows`` its fastest of ``ways``, up to the geometric middle between
    it and the next row count; neighbours with the same way merge."""
    fastest = [min(ways, key=lambda w: relative[w][i]) for i in range(len(rows))]
    plan_ways, limits = [fastest[0]], []
    for i in range(1, len(rows)):
        if fastest[i] != plan_ways[-1]:
            limits.append(int((rows[i - 1] * rows[i]) ** 0.5))
            plan_ways.append(fastest[i])
    return Plan(tuple(plan_ways), tuple(limits))


def _probe(way: Way, layers: list[ProbeLayer], rows: int, repeats: int) -> float:
    """Fastest of ``repeats`` passes of every layer on ``(rows, K)`` random inputs, after a warm-up."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if way == "bf16x3" else "highest")
    try:
        with torch.inference_mode():
            xs = [torch.randn(rows, lin.in_features) for lin, _ in layers]
            outs = [torch.empty(rows, lin.out_features) for lin, _ in layers]
            best = float("inf")
            for i in range(repeats + 1):
                start = time.perf_counter()
                for (lin, gelu), x, out in zip(layers, xs, outs, strict=True):
                    (linear_gelu_into if gelu else linear_into)(way, lin, x, out)
                if i:  # the first pass packs the weights and warms the caches
                    best = min(best, time.perf_counter() - start)
            return best
    finally:
        torch.set_float32_matmul_precision(precision)


def resolve(setting: CpuMatmul, layers: Iterable[nn.Linear | ProbeLayer],
            excluded: Mapping[Way, str] | None = None) -> tuple[Plan, str]:
    """The plan a ``cpu_matmul`` setting runs, and one line saying why: ``auto`` probes
    (:func:`choose`); a forced way that cannot run here, or that ``excluded`` rules out (way -> why),
    falls back to the probe of the others, saying so. Without ``layers`` (no float32 CPU model)
    nothing is probed: ``mkl``, PyTorch's own."""
    layers, excluded = list(layers), dict(excluded or {})
    if not layers:
        return Plan(("mkl",)), "mkl (no float32 linear layer on the CPU to probe)"
    candidates = [w for w in WAYS if w not in excluded]
    if setting != "auto":
        way: Way = ALIASES.get(setting, setting)  # type: ignore[arg-type]
        reason = excluded.get(way) or unsupported_reason(way)
        if reason is None:
            return Plan((way,)), f"{way} (forced by the cpu_matmul setting)"
        choice = choose(layers, candidates)
        return choice.plan, f"{choice.describe()}, as {way} cannot run: {reason}"
    choice = choose(layers, candidates)
    left_out = "".join(f"; {w} left out: {why}" for w, why in excluded.items())
    return choice.plan, choice.describe() + left_out
