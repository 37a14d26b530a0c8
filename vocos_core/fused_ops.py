"""Fused CPU kernels for the backbone's hot path, with plain-PyTorch fallbacks.

On CPU, oneDNN (shipped inside PyTorch, the same kernels ``torch.compile`` uses for CPU) can run a
linear layer with its bias and GELU in one pass over memory, where the plain path writes and reads
back a ``(B * T, 4 * dim)`` activation between the matmul and the GELU. The fused result equals the
plain one to float32 rounding. (oneDNN's fused linear + residual add measured no faster than
``addmm``, so it is not used.)

Their effect on whole-model speed is measured by ``scripts/benchmark.py`` (README, Speed).
"""

from __future__ import annotations

import torch
from torch import nn


def _probe_onednn() -> bool:
    """True when this PyTorch build has oneDNN's fused linear ops and they compute what we expect."""
    try:
        ops = torch.ops.mkldnn
        x, w, b = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5)
        with torch.inference_mode():
            gelu = ops._linear_pointwise(x, w, b, "gelu", [], "none")
        return bool(torch.allclose(gelu, nn.functional.gelu(nn.functional.linear(x, w, b)), atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


ONEDNN = torch.backends.mkldnn.is_available() and _probe_onednn()


def _fusable(x: torch.Tensor) -> bool:
    # oneDNN's ops are CPU-only, and autograd is not needed (inference only).
    return ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``gelu(x @ weight.T + bias)`` (exact erf GELU); ``(..., in)`` -> ``(..., out)``."""
    if _fusable(x):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return nn.functional.gelu(nn.functional.linear(x, weight, bias))


def depthwise_conv_btc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """Depthwise conv over time on ``(B, T, C)`` activations -> ``(B, T, C)``, weight ``(C, 1, K)``.

    ``(B, T, C)`` seen as ``(B, C, 1, T)`` is exactly PyTorch's channels-last layout, so a 2-D
    depthwise conv runs on it without copying and returns channels-last output, which is again
    a contiguous ``(B, T, C)``. This avoids two transposed copies per block and uses oneDNN's much
    faster channels-last depthwise kernel.
    """
    x4 = x.transpose(1, 2).unsqueeze(2)  # (B, T, C) -> (B, C, 1, T), channels-last strides
    y = nn.functional.conv2d(x4, weight.unsqueeze(2), bias, padding=(0, padding), groups=weight.shape[0])
    return y.squeeze(2).transpose(1, 2)  # (B, C, 1, T) -> (B, T, C)


def conv_to_btc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """Dense conv of ``(B, C_in, T)`` features -> ``(B, T, C_out)`` contiguous, weight ``(C_out, C_in, K)``.

    Converting the (narrow) input to channels-last costs less than transposing the (wider) output.
    """
    x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, C_in, 1, T)
    y = nn.functional.conv2d(x4, weight.unsqueeze(2), bias, padding=(0, padding))
    return y.squeeze(2).transpose(1, 2)  # (B, C_out, 1, T) channels-last -> (B, T, C_out)
