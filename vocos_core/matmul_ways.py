"""Ways of running the linear layers' float32 matmuls on CPU, and the choice of one per CPU.

- ``mkl``: ``torch.addmm``, PyTorch's own BLAS (MKL in the x86 wheels; cuBLAS on a GPU). MKL picks
  its code path by CPU vendor; on AMD it is not the fastest float32 GEMM the CPU can run.
- ``onednn``: oneDNN's float32 inner product (``torch.ops.mkldnn._linear_pointwise``), shipped inside
  PyTorch, on a weight reordered once into oneDNN's blocked layout. The same float32 arithmetic as
  ``mkl`` (only the summation order differs, ~1e-6 relative); faster on every CPU measured, most on
  small row counts (docs/performance.md).
- ``bf16x3``: our AMX kernels (:mod:`vocos_core.bf16x3`), about 16 significand bits, on CPUs with AMX.

One way serves the whole process, like PyTorch's float32 matmul precision it goes with: ``bf16x3``
runs where that precision is "high" or "medium" (what it implements), the others at "highest".
:func:`choose` picks the fastest way on the model's own shapes; :func:`set_way` forces one.

oneDNN and bf16x3 compute each output row from its input row alone, bit for bit whatever the number
of rows (tested), so batched items equal their solo decode and one prepacked weight serves any row
count (whole decodes, streaming chunks); MKL does too except for a few rows (~1e-6 apart).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
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

_way: Way = "mkl"


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
    """Run float32 matmuls on CPU as ``way`` from now on; it must be :func:`available`.

    Sets PyTorch's float32 matmul precision too: "high" for bf16x3, else "highest". Call it only for
    CPU models: on a GPU "high" means TF32.
    """
    global _way
    assert unsupported_reason(way) is None, (way, unsupported_reason(way))
    _way = way
    torch.set_float32_matmul_precision("high" if way == "bf16x3" else "highest")


def current() -> Way:
    """The way float32 CPU matmuls run now: ``bf16x3`` wherever the precision allows it and it can run
    (also when the precision was set directly, as before ways existed), else the way last set."""
    if torch.get_float32_matmul_precision() != "highest" and bf16x3.unsupported_reason() is None:
        return "bf16x3"
    return "mkl" if _way == "bf16x3" else _way  # bf16x3, then precision "highest" again: exact float32


def autograd_path(x: torch.Tensor) -> bool:
    """Whether operators on ``x`` must be PyTorch's own, with no in-place updates or ``out=``: while
    autograd records (those have no backward, nor do oneDNN's operator and our kernels) or autocast
    casts (it casts PyTorch's operators only, and ``out=`` would not follow its dtypes)."""
    return torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type)


def way_for(x: torch.Tensor) -> Way:
    """The way a linear layer on ``x`` runs: :func:`current` for float32 CPU inputs off the
    :func:`autograd_path`, ``mkl`` (PyTorch's own) otherwise."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or autograd_path(x):
        return "mkl"
    return current()


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
        return layer(x)
    rows = x.reshape(-1, x.shape[-1]).contiguous()  # (..., K) -> (M, K), a view for contiguous x
    if way == "onednn":
        return _onednn(rows, layer).view(*x.shape[:-1], layer.out_features)
    return bf16x3.linear(x, layer)


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` picked, and why: each way's probe time relative to the fastest (1.0)."""

    way: Way
    relative: dict[Way, float]
    unavailable: dict[Way, str]

    def describe(self) -> str:
        """One line for the start-up log."""
        times = ", ".join(f"{way} {r:.2f}" for way, r in sorted(self.relative.items(), key=lambda kv: kv[1]))
        skipped = "".join(f"; {way} cannot run: {why}" for way, why in self.unavailable.items())
        return f"{self.way} (probe time relative to the fastest: {times}{skipped})"


def choose(layers: Iterable[nn.Linear], candidates: Sequence[Way] = WAYS, rows: Sequence[int] = PROBE_ROWS,
           repeats: int = 3) -> Choice:
    """The fastest of ``candidates`` that can run, timed on the distinct shapes of ``layers`` at each
    row count of ``rows``; it does not :func:`set_way` it.

    A way's score is the mean over ``rows`` of its time relative to the fastest way at that row count,
    so streaming-sized calls count as much as whole-decode ones. About 0.5 s for the mel model's
    three shapes on a 2-core CPU.
    """
    unavailable = {w: r for w in candidates if (r := unsupported_reason(w)) is not None}
    ways = [w for w in candidates if w not in unavailable]
    assert ways, unavailable
    shapes = {(lin.in_features, lin.out_features): lin for lin in layers}
    times = {w: [_probe(w, list(shapes.values()), r, repeats) for r in rows] for w in ways}
    best = [min(times[w][i] for w in ways) for i in range(len(rows))]
    relative = {w: sum(t / b for t, b in zip(times[w], best, strict=True)) / len(rows) for w in ways}
    return Choice(min(ways, key=lambda w: relative[w]), relative, unavailable)


def _probe(way: Way, layers: list[nn.Linear], rows: int, repeats: int) -> float:
    """Fastest of ``repeats`` passes of every layer on ``(rows, K)`` random inputs, after a warm-up."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if way == "bf16x3" else "highest")
    try:
        with torch.inference_mode():
            xs = [torch.randn(rows, lin.in_features) for lin in layers]
            outs = [torch.empty(rows, lin.out_features) for lin in layers]
            best = float("inf")
            for i in range(repeats + 1):
                start = time.perf_counter()
                for lin, x, out in zip(layers, xs, outs, strict=True):
                    linear_into(way, lin, x, out)
                if i:  # the first pass packs the weights and warms the caches
                    best = min(best, time.perf_counter() - start)
            return best
    finally:
        torch.set_float32_matmul_precision(precision)


def resolve(setting: CpuMatmul, layers: Iterable[nn.Linear]) -> tuple[Way, str]:
    """The way a ``cpu_matmul`` setting runs, and one line saying why: ``auto`` probes
    (:func:`choose`); a forced way that cannot run here falls back to the probe, saying so. Without
    ``layers`` (no float32 CPU model) nothing is probed: ``mkl``, PyTorch's own."""
    layers = list(layers)
    if not layers:
        return "mkl", "mkl (no float32 linear layer on the CPU to probe)"
    if setting != "auto":
        way = ALIASES.get(setting, setting)
        reason = unsupported_reason(way)  # type: ignore[arg-type]
        if reason is None:
            return way, f"{way} (forced by the cpu_matmul setting)"  # type: ignore[return-value]
        choice = choose(layers)
        return choice.way, f"{choice.describe()}, as {way} cannot run: {reason}"
    choice = choose(layers)
    return choice.way, choice.describe()
