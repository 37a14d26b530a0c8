"""SEANet encoder of EnCodec 24 kHz: audio (B, 1, S) -> latent frames (B, 128, ceil(S / 320)).

Layer order and attribute names follow the official checkpoint (``encoder.model.<i>...``): ``model`` is
one ``nn.Sequential`` whose index ``i`` is part of every key, so activations (which have no weights) must
keep their slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .conv import SConv1d


@dataclass(frozen=True)
class SEANetConfig:
    """Hyperparameters of the SEANet encoder; defaults are those of the 24 kHz model."""

    channels: int = 1
    dimension: int = 128
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # upsampling order; the encoder applies them reversed
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    lstm_layers: int = 2
    elu_alpha: float = 1.0

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (320 for the 24 kHz model)."""
        return math.prod(self.ratios)


class SEANetResnetBlock(nn.Module):
    """``shortcut(x) + block(x)``: block = ELU, conv k=3 (dim -> dim/compress), ELU, conv k=1 (back to dim);
    shortcut = 1x1 conv (the checkpoint was trained without a true identity skip).

    Shapes: (B, dim, T) -> (B, dim, T).
    """

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int, elu_alpha: float) -> None:
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(alpha=elu_alpha),
            SConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(alpha=elu_alpha),
            SConv1d(hidden, dim, 1),
        )
        self.shortcut = SConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SLSTM(nn.Module):
    """Stacked LSTM over time with a residual connection. Shapes: (B, C, T) -> (B, C, T)."""

    def __init__(self, dimension: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)  # (B, C, T) -> (T, B, C): nn.LSTM is time-major by default
        y, _ = self.lstm(x)
        y = y + x
        return y.permute(1, 2, 0)  # (T, B, C) -> (B, C, T)


def _build_layers(cfg: SEANetConfig) -> list[nn.Module]:
    """Layers in checkpoint order: conv, then per ratio (resblocks, ELU, strided conv), LSTM, ELU, conv."""
    width = cfg.n_filters
    layers: list[nn.Module] = [SConv1d(cfg.channels, width, cfg.kernel_size)]
    for ratio in reversed(cfg.ratios):
        for j in range(cfg.n_residual_layers):
            layers.append(
                SEANetResnetBlock(
                    width, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress, cfg.elu_alpha
                )
            )
        downsample = SConv1d(width, width * 2, kernel_size=ratio * 2, stride=ratio)
        layers += [nn.ELU(alpha=cfg.elu_alpha), downsample]
        width *= 2
    if cfg.lstm_layers:
        layers.append(SLSTM(width, cfg.lstm_layers))
    layers += [nn.ELU(alpha=cfg.elu_alpha), SConv1d(width, cfg.dimension, cfg.last_kernel_size)]
    return layers


class SEANetEncoder(nn.Module):
    """Causal SEANet encoder. Shapes: (B, channels, S) -> (B, dimension, ceil(S / hop_length))."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = nn.Sequential(*_build_layers(cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
