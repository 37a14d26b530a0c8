"""Residual vector quantizer of EnCodec (inference only: nearest-codeword search, no EMA updates).

Attribute names reproduce the checkpoint keys ``quantizer.vq.layers.<i>._codebook.{inited, cluster_size,
embed, embed_avg}``. Only ``embed`` is used for encoding; the other buffers are kept so the official file
loads strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class QuantizerConfig:
    """Hyperparameters of the residual quantizer; defaults are those of the 24 kHz model."""

    dimension: int = 128
    n_q: int = 32
    bins: int = 1024


class EuclideanCodebook(nn.Module):
    """One codebook of ``bins`` vectors of size ``dim``."""

    def __init__(self, dim: int, bins: int) -> None:
        super().__init__()
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(bins))
        self.register_buffer("embed", torch.zeros(bins, dim))
        self.register_buffer("embed_avg", torch.zeros(bins, dim))
        self.inited: torch.Tensor
        self.cluster_size: torch.Tensor
        self.embed: torch.Tensor
        self.embed_avg: torch.Tensor

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codeword for each row: (N, dim) -> (N,) int64.

        The distance is spelled exactly as in the training code (expanded square, then max of its
        negation) rather than ``torch.cdist``/argmin: any other formula rounds differently and can flip
        near-ties, and the codes must be identical to what the checkpoint's own code produces.
        """
        embed = self.embed.t()  # (bins, dim) -> (dim, bins), a view, as in the training code
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices


class VectorQuantization(nn.Module):
    """One residual stage. The 24 kHz model has no projection (codebook dim == latent dim)."""

    def __init__(self, dim: int, bins: int) -> None:
        super().__init__()
        self._codebook = EuclideanCodebook(dim, bins)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, T) -> codes (B, T) int64."""
        batch, dim, frames = x.shape
        # (B, dim, T) -> (B, T, dim) -> (B*T, dim): rows are frames; reshape copies into the same
        # contiguous layout the training code fed to the matmul.
        rows = x.transpose(1, 2).reshape(batch * frames, dim)
        return self._codebook.quantize(rows).view(batch, frames)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T) -> quantized latents (B, dim, T)."""
        # (B, T, dim) -> (B, dim, T) to match the latent layout
        return nn.functional.embedding(codes, self._codebook.embed).transpose(1, 2)


class ResidualVectorQuantization(nn.Module):
    """Stack of ``n_q`` stages, each quantizing what the previous ones left over."""

    def __init__(self, dim: int, bins: int, n_q: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(dim, bins) for _ in range(n_q))

    def stages(self) -> list[VectorQuantization]:
        """``layers`` with their concrete type (ModuleList items are typed as plain modules)."""
        return [layer for layer in self.layers if isinstance(layer, VectorQuantization)]

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """latents (B, dim, T) -> codes (n_q, B, T) int64 using the first ``n_q`` stages."""
        assert 1 <= n_q <= len(self.layers), n_q
        residual = x
        codes = []
        for layer in self.stages()[:n_q]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices)
            codes.append(indices)
        return torch.stack(codes)


class ResidualVectorQuantizer(nn.Module):
    """Residual quantizer with the bandwidth -> number-of-codebooks rule of EnCodec."""

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vq = ResidualVectorQuantization(cfg.dimension, cfg.bins, cfg.n_q)

    def num_quantizers(self, frame_rate: int, bandwidth: float) -> int:
        """Codebooks that fit in ``bandwidth`` kbps: each frame of each codebook costs log2(bins) bits."""
        bits_per_second_per_q = math.log2(self.cfg.bins) * frame_rate
        return int(max(1, math.floor(bandwidth * 1000 / bits_per_second_per_q)))

    def encode(self, x: torch.Tensor, frame_rate: int, bandwidth: float) -> torch.Tensor:
        """latents (B, dim, T) -> codes (n_q, B, T) int64."""
        return self.vq.encode(x, self.num_quantizers(frame_rate, bandwidth))

    def codebook(self, n_q: int) -> torch.Tensor:
        """The first ``n_q`` codebooks stacked: (n_q * bins, dim)."""
        return torch.cat([stage._codebook.embed for stage in self.vq.stages()[:n_q]], dim=0)
