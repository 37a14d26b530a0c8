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

    Built from flipped slices and one ``torch.cat``: the same values as ``F.pad(mode="reflect")``,
    but a plain copy, cheaper than ``reflection_pad1d`` (docs/performance.md). No padding returns
    ``x`` itself, which the 1x1 convolutions rely on.

    ``F.pad`` refuses reflect padding wider than the input, so a short input is first zero-extended on
    the right and the extension is cut off again afterwards; this is what the checkpoint expects for
    inputs shorter than a kernel (e.g. a few samples of audio).
    """
    assert left >= 0 and right >= 0, (left, right)
    if left == 0 and right == 0:
        return x
    length = x.shape[-1]
    if length <= max(left, right):
        zero_extension = max(left, right) - length + 1
        padded = F.pad(F.pad(x, (0, zero_extension)), (left, right), mode="reflect")
        return padded[..., : padded.shape[-1] - zero_extension]
    # Reflection excludes the edge sample: x[left], ..., x[1] | x | x[T-2], ..., x[T-1-right].
    head = x[..., 1 : left + 1].flip(-1)
    tail = x[..., length - 1 - right : length - 1].flip(-1)
    return torch.cat([head, x, tail], dim=-1)


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

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, T_padded) -> (B, C_out, T_out); no padding of its own.

        ``weight``, if given, is :meth:`weight` computed beforehand (once for many chunks).
        """
        return F.conv1d(x, self.weight() if weight is None else weight, self.bias, self.stride, 0, self.dilation)


class NormConv1d(nn.Module):
    """One extra nesting level (``.conv``) so parameter names match the checkpoint."""

    def __init__(self, conv: WeightNormConv1d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x, weight)


class ChunkState:
    """What one :class:`SConv1d` carries from a chunk to the next: the end of its (padded) input,
    whether the coming chunk is the last, and its weight computed once for all chunks."""

    def __init__(self, conv: SConv1d) -> None:
        self.history: torch.Tensor | None = None
        self.last = False
        self.weight = conv.conv.conv.weight()


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

    @property
    def left_padding(self) -> int:
        """Input samples before the first one that the first output window reads (the causal context)."""
        inner = self.conv.conv
        return (inner.kernel_size - 1) * inner.dilation - (inner.stride - 1)

    def right_padding(self, length: int) -> int:
        inner = self.conv.conv
        return extra_padding_for_conv1d(length, inner.kernel_size, inner.stride, self.left_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad1d_reflect(x, self.left_padding, self.right_padding(x.shape[-1])))

    def forward_chunk(self, x: torch.Tensor, state: ChunkState) -> torch.Tensor:
        """One time chunk of :meth:`forward`: (B, C_in, n) -> (B, C_out, ceil(n / stride)).

        Chunks must come in order, each but the last a multiple of ``stride`` long and at least
        :attr:`left_padding` long. Every output sample then reads the same input samples as in one
        whole-signal call: the first chunk is reflect-padded on the left, each later one is preceded
        by the end of the one before (kept in ``state``), and only the last is padded on the right.
        The right padding depends on the length modulo ``stride`` only, which the last chunk shares
        with the whole signal.
        """
        left = self.left_padding
        right = self.right_padding(x.shape[-1]) if state.last else 0
        if state.history is None:
            padded = pad1d_reflect(x, left, right)
        else:
            padded = pad1d_reflect(torch.cat([state.history, x], dim=-1), 0, right)
        state.history = padded[..., padded.shape[-1] - left :] if left and not state.last else None
        return self.conv(padded, state.weight)
