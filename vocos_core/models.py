"""Vocos backbones: features ``(B, C, T)`` -> hidden states ``(B, T, dim)``."""

from __future__ import annotations

import torch
from torch import nn

from .channels_last import conv_to_btc
from .config import VocosBackboneConfig, VocosResNetBackboneConfig
from .matmul_ways import autograd_path
from .modules import (
    AdaLayerNorm,
    ConvNeXtBlock,
    MLPWorkspace,
    ResBlock1,
    WeightNormConv1d,
    apply_mask,
    masked_rows,
)


class VocosBackbone(nn.Module):
    """ConvNeXt backbone, optionally conditioned on a bandwidth id through AdaLayerNorm."""

    def __init__(self, config: VocosBackboneConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.input_channels = config.input_channels
        self.embed = nn.Conv1d(config.input_channels, dim, kernel_size=7, padding=3)
        self.adanorm = config.adanorm_num_embeddings is not None
        self.norm: nn.Module
        if config.adanorm_num_embeddings is not None:
            self.norm = AdaLayerNorm(config.adanorm_num_embeddings, dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(
            [ConvNeXtBlock(dim, config.intermediate_dim, config.adanorm_num_embeddings)
             for _ in range(config.num_layers)]
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    @property
    def reach(self) -> int:
        """Frames either side of a frame that its output depends on, through any one convolution."""
        pads = [int(self.embed.padding[0])] + [b.padding for b in self.convnext if isinstance(b, ConvNeXtBlock)]
        return max(pads)

    def forward(self, x: torch.Tensor, bandwidth_id: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, input_channels, T)`` -> ``(B, T, dim)``; with AdaLayerNorm, ``bandwidth_id`` ``(1,)``,
        ``(B,)`` or per frame ``(1, T)``; ``mask`` ``(B, T)``, True on real frames."""
        assert self.embed.bias is not None
        pad = int(self.embed.padding[0])
        x = conv_to_btc(apply_mask(x, mask), self.embed.weight, self.embed.bias, padding=pad)  # (B, T, dim)
        x = self.norm(x, bandwidth_id) if self.adanorm else self.norm(x)  # a fresh tensor, ours to update
        if autograd_path(x):  # training: the in-place updates below have no backward
            for block in self.convnext:
                x = block(x, cond_embedding_id=bandwidth_id, mask=mask)
            return self.final_layer_norm(x)
        workspace, padding_rows = MLPWorkspace(x, self.config.intermediate_dim), masked_rows(mask)
        for block in self.convnext:
            assert isinstance(block, ConvNeXtBlock)
            x = block.residual_update_(x, workspace, cond_embedding_id=bandwidth_id, padding_rows=padding_rows)
        return self.final_layer_norm(x)


class VocosResNetBackbone(nn.Module):
    """Weight-normed convolutional ResNet backbone (no conditioning)."""

    def __init__(self, config: VocosResNetBackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.input_channels = config.input_channels
        self.adanorm = False
        self.embed = WeightNormConv1d(config.input_channels, config.dim, kernel_size=3, padding=1)
        self.resnet = nn.Sequential(*[ResBlock1(config.dim) for _ in range(config.num_blocks)])

    @property
    def reach(self) -> int:
        """Frames either side of a frame that its output depends on, through any one convolution."""
        return max(m.padding for m in self.modules() if isinstance(m, WeightNormConv1d))

    def forward(self, x: torch.Tensor, bandwidth_id: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, input_channels, T)`` -> ``(B, T, dim)``; ``bandwidth_id`` is ignored."""
        x = self.embed(apply_mask(x, mask))
        for block in self.resnet:
            x = block(x, mask=mask)
        return x.transpose(1, 2)  # (B, dim, T) -> (B, T, dim) for the head


Backbone = VocosBackbone | VocosResNetBackbone


def build_backbone(config: VocosBackboneConfig | VocosResNetBackboneConfig) -> Backbone:
    if isinstance(config, VocosBackboneConfig):
        return VocosBackbone(config)
    return VocosResNetBackbone(config)
