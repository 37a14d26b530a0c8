"""Convolutions on ``(B, T, C)`` activations through PyTorch's channels-last layout.

The backbone keeps its hidden states as ``(B, T, C)``, the layout its LayerNorms and linear layers
want. The reference instead holds ``(B, C, T)`` for the convolutions and transposes twice per block,
each transpose a full copy. Seen as ``(B, C, 1, T)``, a contiguous ``(B, T, C)`` tensor is exactly
channels-last, so 2-D convolutions run on it without copying, and oneDNN's channels-last depthwise
kernel is several times faster than the channels-first one (docs/performance.md).
"""

from __future__ import annotations

import torch
from torch import nn


def depthwise_conv_btc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """Depthwise conv over time on ``(B, T, C)`` activations -> ``(B, T, C)``, weight ``(C, 1, K)``."""
    x4 = x.transpose(1, 2).unsqueeze(2)  # (B, T, C) -> (B, C, 1, T), channels-last strides
    y = nn.functional.conv2d(x4, weight.unsqueeze(2), bias, padding=(0, padding), groups=weight.shape[0])
    return y.squeeze(2).transpose(1, 2)  # (B, C, 1, T) -> (B, T, C)


def conv_to_btc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """Dense conv of ``(B, C_in, T)`` features -> ``(B, T, C_out)`` contiguous, weight ``(C_out, C_in, K)``.

    Converting the (narrow) input to channels-last costs less than transposing the (wider) output.
    """
    # From a contiguous (B, C_in, T) whatever x's strides: a transposed view (the streaming decoder's rows)
    # runs another kernel, whose bfloat16/float16 outputs round differently from the offline decode's.
    x4 = x.contiguous().unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, C_in, 1, T)
    y = nn.functional.conv2d(x4, weight.unsqueeze(2), bias, padding=(0, padding))
    return y.squeeze(2).transpose(1, 2)  # (B, C_out, 1, T) channels-last -> (B, T, C_out)
