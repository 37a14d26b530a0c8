"""bf16x3 linear layers on CPUs with AMX: what ``torch.set_float32_matmul_precision("high")`` allows.

Each float32 operand is split into two bfloat16 parts, ``hi = bf16(x)`` and ``lo = bf16(x - hi)``,
and ``a @ w.T`` becomes ``a_hi w_hi + a_hi w_lo + a_lo w_hi``, accumulated in float32 by the CPU's
AMX tile unit (``csrc/bf16x3.c``). That keeps about 16 of float32's 24 significand bits, PyTorch's
definition of "high" float32 matmul precision, which its own CPU matmuls do not implement: they
either run in float32 or, at "medium", round every product to bfloat16.

Each output row depends on its own input row alone, bit for bit, so batching stays exact. Speed
and error, measured: docs/performance.md.

One of the CPU matmul ways of :mod:`vocos_core.matmul_ways`: used where the model runs on the CPU
in float32, the precision is "high" or "medium", and the kernels can run (:func:`unsupported_reason`).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch import nn

_bf16x3: types.ModuleType | None
_NOT_LOADED: str | None = None  # why _bf16x3 is None
try:
    # Absolute: a missing module is then a ModuleNotFoundError naming it ("from . import" says ImportError).
    import vocos_core._bf16x3 as _bf16x3
except ImportError as exc:
    _bf16x3 = None
    if isinstance(exc, ModuleNotFoundError) and exc.name == "vocos_core._bf16x3":
        # Built without a C compiler, or on another platform: PyTorch does every matmul.
        _NOT_LOADED = "vocos_core._bf16x3 was not built (no C compiler with OpenMP at install time?)"
    else:  # built, but not loadable here: e.g. an image without the OpenMP runtime it links
        _NOT_LOADED = f"vocos_core._bf16x3 was built but cannot be loaded: {exc}"

# Rows per kernel call: bounds the split-input scratch at ROWS x K x 4 bytes (6 MiB at K = 1536),
# and matches the backbone's MLP chunks (vocos_core.modules.MLP_CHUNK_ROWS).
ROWS = 1024
# Rows of 32 and columns of 32: the kernel's output block.
BLOCK = 32


def unsupported_reason() -> str | None:
    """None when the kernels can run on this machine, else why they cannot."""
    if _bf16x3 is None:
        return _NOT_LOADED
    return _bf16x3.unsupported_reason()


def enabled_for(x: torch.Tensor) -> bool:
    """Whether a linear layer on ``x`` runs here: float32 on CPU, precision "high"/"medium", no
    autograd (the kernels have no backward; Vocos' entry points run in inference mode), kernels usable."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
            and torch.get_float32_matmul_precision() != "highest" and unsupported_reason() is None)


@dataclass(frozen=True)
class PackedWeight:
    """An ``(N, K)`` float32 weight split into bf16 ``hi`` and ``lo`` parts in the kernel's tile order."""

    hi: torch.Tensor  # (ceil(N / 32) * 32 * ceil(K / 32) * 32,) int16 holding bf16 bits
    lo: torch.Tensor
    n: int
    k: int
    key: tuple[int, int]  # the weight's (data_ptr, version) when packed

    @classmethod
    def of(cls, weight: torch.Tensor) -> PackedWeight:
        assert weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.dim() == 2
        assert _bf16x3 is not None
        w = weight.detach().contiguous()
        n, k = w.shape
        size = _round_up(n) * _round_up(k)
        hi, lo = torch.empty(size, dtype=torch.int16), torch.empty(size, dtype=torch.int16)
        _bf16x3.pack_weight(w.data_ptr(), n, k, hi.data_ptr(), lo.data_ptr())
        return cls(hi, lo, n, k, weight_key(weight))


def packed(layer: nn.Linear) -> PackedWeight:
    """``layer``'s packed weight, split again whenever the weight changed (``load_state_dict``, ``copy_``)."""
    pack: PackedWeight | None = getattr(layer, "_bf16x3_pack", None)
    if pack is None or pack.key != weight_key(layer.weight):
        pack = PackedWeight.of(layer.weight)
        # A plain attribute, not a buffer: state_dict and checkpoints never see it.
        object.__setattr__(layer, "_bf16x3_pack", pack)
    return pack


def linear_into(x: torch.Tensor, layer: nn.Linear, out: torch.Tensor, scratch: torch.Tensor | None = None) -> None:
    """``out[:] = layer(x)`` for ``x`` ``(M, K)`` and ``out`` ``(M, N)``, both with unit column stride.

    ``scratch``: int16, at least :func:`scratch_size` ``(M, K)`` elements, else allocated here.
    """
    assert enabled_for(x) and _bf16x3 is not None
    assert x.dim() == 2 and out.dim() == 2 and x.stride(1) == 1 and out.stride(1) == 1
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    pack = packed(layer)
    m, k = x.shape
    if m == 0:
        return
    assert k == pack.k and out.shape == (m, pack.n), (x.shape, out.shape, pack.n, pack.k)
    rows = min(m, ROWS)
    need = scratch_size(rows, k)
    if scratch is None or scratch.numel() < need:
        scratch = torch.empty(need, dtype=torch.int16)
    half = need // 2
    bias = None if layer.bias is None else layer.bias.detach().contiguous()  # held until the calls return
    bias_ptr = 0 if bias is None else bias.data_ptr()
    threads = torch.get_num_threads()
    for start in range(0, m, ROWS):
        end = min(start + ROWS, m)
        _bf16x3.linear(x[start].data_ptr(), end - start, k, x.stride(0), pack.hi.data_ptr(), pack.lo.data_ptr(),
                       bias_ptr, pack.n, out[start].data_ptr(), out.stride(0), scratch.data_ptr(),
                       scratch[half:].data_ptr(), threads)


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` for ``x`` ``(..., K)``, through the kernels when :func:`enabled_for` ``x``."""
    if not enabled_for(x):
        return layer(x)
    rows = x.reshape(-1, x.shape[-1])  # (..., K) -> (M, K), a view for contiguous x
    if rows.stride(1) != 1:
        rows = rows.contiguous()
    out = x.new_empty(rows.shape[0], layer.out_features)
    linear_into(rows, layer, out)
    return out.view(*x.shape[:-1], layer.out_features)


def scratch_size(rows: int, k: int) -> int:
    """int16 elements of scratch for the split of ``(rows, K)`` inputs (hi and lo parts)."""
    return 2 * _round_up(min(rows, ROWS)) * _round_up(k)


def _round_up(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def weight_key(weight: torch.Tensor) -> tuple[int, int]:
    """What tells a changed weight from the one packed: its storage and version."""
    # Inference tensors keep no version counter: made in inference mode, a weight is taken as constant.
    return weight.data_ptr(), -1 if weight.is_inference() else weight._version
