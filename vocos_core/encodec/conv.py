"""Causal, weight-normalised 1-D convolution of the EnCodec 24 kHz encoder.

The module nesting ``SConv1d.conv`` -> ``NormConv1d.conv`` (a ``WeightNormConv1d``) -> parameters
``weight_g``, ``weight_v``, ``bias`` mirrors the official checkpoint keys
(``encoder.model.0.conv.conv.weight_g``), so it loads without remapping.
Only the causal, reflect-padded variant is implemented: it is the one the 24 kHz model uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last convolution window full.

    Integer form of ``ceil((length - kernel_size + padding_total) / stride)``: for the small integers
    involved it equals the float computation the checkpoint was trained with, without float rounding.
    """
    n_windows_minus_one = -(-(length - kernel_size + padding_total) // stride)
    ideal_length = n_windows_minus_one * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d_reflect(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect-pad the last axis of ``x`` (B, C, T) -> (B, C, left + T + right).

    ``F.pad`` refuses reflect padding wider than the input, so a short input is first zero-extended on
    the right and the extension is cut off again afterwards; this is what the checkpoint expects for
    inputs shorter than a kernel (e.g. a few samples of audio).
    """
    assert left >= 0 and right >= 0, (left, right)
    length = x.shape[-1]
    zero_extension = 0
    widest = max(left, right)
    if length <= widest:
        zero_extension = widest - length + 1
        x = F.pad(x, (0, zero_extension))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - zero_extension]


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``weight_g * weight_v / ||weight_v||`` (norm over all axes but 0).

    Stored as ``weight_g`` (C_out, 1, 1) and ``weight_v`` (C_out, C_in, K) exactly like the legacy
    ``torch.nn.utils.weight_norm`` hook produced them; we recompute the weight with the same kernel
    (``torch._weight_norm``) so results match bit for bit, without the deprecated hook machinery.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.weight_g = nn.Parameter(torch.empty(out_channels, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))

    def weight(self) -> torch.Tensor:
        """Effective convolution weight (C_out, C_in, K)."""
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T_padded) -> (B, C_out, T_out); no padding of its own."""
        return F.conv1d(x, self.weight(), self.bias, self.stride, 0, self.dilation)


class NormConv1d(nn.Module):
    """One extra nesting level (``.conv``) so parameter names match the checkpoint."""

    def __init__(self, conv: WeightNormConv1d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SConv1d(nn.Module):
    """Causal conv: pads ``(k - 1) * dilation - (stride - 1)`` on the left (reflect) plus the right
    padding that completes the last window, so ``T_out = ceil(T / stride)``.

    Shapes: (B, C_in, T) -> (B, C_out, ceil(T / stride)).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv = NormConv1d(WeightNormConv1d(in_channels, out_channels, kernel_size, stride, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.conv.conv
        padding_total = (inner.kernel_size - 1) * inner.dilation - (inner.stride - 1)
        extra = extra_padding_for_conv1d(x.shape[-1], inner.kernel_size, inner.stride, padding_total)
        return self.conv(pad1d_reflect(x, padding_total, extra))
