#!/usr/bin/env python3
"""Can bfloat16 matmul hardware (AMX) speed up a decode's float32 matmuls without changing its numbers?

    python3 scripts/matmul_precision.py        # one ConvNeXt MLP of the official mel model, 10 s of frames

The matmuls are most of a CPU decode (docs/performance.md). A float32 operand x splits exactly into
bfloat16 parts ``hi = bf16(x)``, ``lo = bf16(x - hi)``; three bf16 products, ``hi·hi + hi·lo + lo·hi``
("bf16x3"), recover about 16 of float32's 24 significant bits, at three times the work. It pays where
bf16 runs more than three times faster than float32 *and* the products come back in float32. The
script times one MLP (``frames x dim -> intermediate -> dim``, GELU between) up to five ways (those
that can run, and give the numbers they mean to, here), each against float64:

- ``float32``: what a decode runs (MKL);
- ``bf16``: the bf16 rate, output rounded to bf16 (1 product, to show the hardware's speed);
- ``bf16x3 native``: the matmuls alone, on operands split beforehand, as bf16 matmuls: what the
  hardware could give. PyTorch's CPU matmuls return bf16 for bf16 operands, so the outputs are
  rounded to bf16 and the error is bf16's: no use as it is;
- ``bf16x3 onednn``: the one float32-in, float32-out route: oneDNN's float32 matmul with bf16 maths
  (``fp32_precision = "bf16"``), weights split and prepacked once, activations split per call; left
  out (one line says why) where oneDNN does not round the activations to bf16 (no AMX);
- ``bf16x3 kernels``: vocos_core's own AMX kernels (``vocos_core.bf16x3``), float32 in and out, what a
  decode runs at float32 matmul precision "high" (timed where they can run; elsewhere one line says why).

Not a test: figures depend on the CPU (bf16 is fast only with AMX) and on what else runs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from vocos_core import bf16x3

linear_pointwise = torch.ops.mkldnn._linear_pointwise


def split_bf16(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` float32 -> ``(hi, lo)`` float32, each exactly a bfloat16 value, ``hi + lo`` ≈ ``x`` to ~2^-17."""
    hi = x.bfloat16().float()
    return hi, (x - hi).bfloat16().float()


class Bf16x3Linear:
    """``a @ weight.T + bias`` for float32 ``a`` ``(M, K)``, ``weight`` ``(N, K)`` as three bf16 products.

    oneDNN rounds ``a`` to bf16 itself (with AMX; see :func:`onednn_unrounded_reason`), so one matmul
    against ``[w_hi; w_lo]`` gives ``a_hi·w_hi`` and ``a_hi·w_lo`` side by side; a second gives ``a_lo·w_hi``.
    Only ``a_lo`` is made per call.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        w_hi, w_lo = split_bf16(weight)
        with bf16_maths():
            self.hi_lo = torch.ops.mkldnn._reorder_linear_weight(torch.cat([w_hi, w_lo]).contiguous(), None)
            self.hi = torch.ops.mkldnn._reorder_linear_weight(w_hi.contiguous(), None)
        self.n, self.bias = weight.shape[0], bias

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        with bf16_maths():
            both = linear_pointwise(a, self.hi_lo, None, "none", [], "")  # (M, 2N): a_hi·w_hi | a_hi·w_lo
            out = linear_pointwise(a - a.bfloat16().float(), self.hi, self.bias, "none", [], "")  # a_lo·w_hi + b
        return out.add_(both[:, : self.n]).add_(both[:, self.n:])


def onednn_unrounded_reason() -> str | None:
    """Why the "bf16x3 onednn" route is wrong on this CPU, None where it is right. It relies on oneDNN's
    bf16 maths rounding ``a`` to bf16; where oneDNN keeps ``a`` float32 (AVX512-BF16 without AMX, e.g. AMD
    EPYC) ``a·[w_hi; w_lo] + a_lo·w_hi`` counts ``a_lo·w_hi`` twice, a 2.5e-3 error. One product tells."""
    gen = torch.Generator().manual_seed(0)
    a, w = torch.randn(32, 64, generator=gen), torch.randn(48, 64, generator=gen).bfloat16().float()
    with bf16_maths():
        y = linear_pointwise(a, torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), None), None, "none", [], "")
    rounded = a.bfloat16().double() @ w.double().T  # what a bf16 product gives, to float32 accumulation
    err = float((y.double() - rounded).abs().max() / rounded.abs().max())
    if err < 1e-4:  # bf16 rounding of a is ~1e-3 away; float32 accumulation ~1e-7
        return None
    return (f"left out: oneDNN's bf16 maths does not round a to bf16 on this CPU (one product is {err:.1e} "
            "from the bf16 one), so the route would count a_lo·w_hi twice")


@contextlib.contextmanager
def bf16_maths() -> Iterator[None]:
    """oneDNN float32 matmuls with bf16 products inside the block; a process-wide setting, restored after."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before


def mlps(frames: int, dim: int, intermediate: int,
         seed: int = 0) -> tuple[torch.Tensor, dict[str, Callable[[], object]], dict[str, torch.Tensor]]:
    """A random MLP on random input: its float64 result, the ways to time, and each way's result."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(frames, dim, generator=gen)  # layer-normed activations: unit scale
    w1, b1 = torch.randn(intermediate, dim, generator=gen) / dim**0.5, 0.1 * torch.randn(intermediate, generator=gen)
    w2, b2 = torch.randn(dim, intermediate, generator=gen) / intermediate**0.5, 0.1 * torch.randn(dim, generator=gen)
    gelu = torch.nn.functional.gelu
    exact = gelu(h.double() @ w1.double().T + b1.double()) @ w2.double().T + b2.double()
    # Native bf16x3: both layers' operands split and concatenated beforehand; only the matmuls are timed.
    a1, v1 = x3_operands(h, w1)
    a2, v2 = x3_operands(gelu(torch.addmm(b1, h, w1.T)), w2)
    lin1, lin2 = Bf16x3Linear(w1, b1), Bf16x3Linear(w2, b2)
    hb, w1b, w2b = h.bfloat16(), w1.bfloat16(), w2.bfloat16()
    ways: dict[str, Callable[[], object]] = {
        "float32": lambda: torch.addmm(b2, gelu(torch.addmm(b1, h, w1.T)), w2.T),
        "bf16": lambda: gelu(hb @ w1b.T + b1.bfloat16()) @ w2b.T + b2.bfloat16(),
        "bf16x3 native": lambda: (a1 @ v1.T, a2 @ v2.T),
    }
    if onednn_unrounded_reason() is None:
        ways["bf16x3 onednn"] = lambda: lin2(gelu(lin1(h)))
    if bf16x3.unsupported_reason() is None:
        ways["bf16x3 kernels"] = kernels_mlp(w1, b1, w2, b2, h)
    results = {name: fn() for name, fn in ways.items() if name != "bf16x3 native"}
    a2_native, v2_native = x3_operands(gelu((a1 @ v1.T).float() + b1), w2)  # its own rounded hidden layer
    results["bf16x3 native"] = (a2_native @ v2_native.T).float() + b2
    return exact, ways, {name: torch.as_tensor(r).float() for name, r in results.items()}


def kernels_mlp(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                h: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The MLP through vocos_core.bf16x3, switched on for the call only."""
    layers = []
    for w, b in ((w1, b1), (w2, b2)):
        layer = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            layer.weight.copy_(w), layer.bias.copy_(b)
        layers.append(layer)

    def run() -> torch.Tensor:
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        try:
            return bf16x3.linear(torch.nn.functional.gelu(bf16x3.linear(h, layers[0])), layers[1])
        finally:
            torch.set_float32_matmul_precision(before)
    return run


def x3_operands(a: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 ``[a_hi, a_hi, a_lo]`` ``(M, 3K)`` and ``[w_hi, w_lo, w_hi]`` ``(N, 3K)``: one matmul, three products."""
    (a_hi, a_lo), (w_hi, w_lo) = split_bf16(a), split_bf16(weight)
    return torch.cat([a_hi, a_hi, a_lo], 1).bfloat16(), torch.cat([w_hi, w_lo, w_hi], 1).bfloat16()


def paired_medians(ways: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per way; each round times every way once, back to back."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=938, help="rows: 10 s of 24 kHz audio at hop 256 (default)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--rounds", type=int, default=21)
    args = p.parse_args()
    with torch.inference_mode():
        exact, ways, results = mlps(args.frames, args.dim, args.intermediate)  # also the warm-up
        medians = paired_medians(ways, args.rounds)
        print(f"MLP {args.frames} x {args.dim} -> {args.intermediate} -> {args.dim}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {args.rounds} paired rounds")
        print(f"{'way':16s} {'ms':>8s} {'vs float32':>11s} {'error vs float64':>17s}")
        for name, result in results.items():
            err = float((result.double() - exact).abs().max() / exact.abs().max())
            print(f"{name:16s} {1e3 * medians[name]:8.2f} {medians['float32'] / medians[name]:10.2f}x {err:17.1e}")
        notes = left_out()
        if notes:
            print("\n" + "\n".join(notes))


def left_out() -> list[str]:
    """One line per way the table leaves out here, saying why (the docs' table has all five ways)."""
    notes = []
    if (reason := onednn_unrounded_reason()) is not None:
        notes.append(f"bf16x3 onednn: {reason}")
    if (reason := bf16x3.unsupported_reason()) is not None:
        notes.append(f"bf16x3 kernels: left out: {reason}")
    return notes


if __name__ == "__main__":
    main()
