"""Vocos heads: hidden states ``(B, T, dim)`` -> audio ``(B, S)`` through an inverse transform.

Given per-item frame counts, a head returns a list of ``(S_i,)`` tensors instead, each exactly what
the item would give alone (see :mod:`vocos_core.spectral_ops`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import matmul_ways
from .config import HeadConfig, IMDCTCosHeadConfig, IMDCTSymExpHeadConfig, ISTFTHeadConfig
from .spectral_ops import IMDCT, ISTFT

# Upper bound on predicted magnitudes, as in the reference: keeps exp() of a wild logit finite.
MAX_MAGNITUDE = 1e2

Audio = torch.Tensor | list[torch.Tensor]


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * (torch.exp(x.abs()) - 1)


def polar(mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """``mag * exp(i * phase)``: real ``(..., F)`` pair -> complex ``(..., F)``.

    What ``torch.polar`` computes, but ``torch.polar`` evaluates cos and sin one element at a time
    on CPU, while ``torch.cos``/``torch.sin`` are vectorised (docs/performance.md); the same values
    to within an ulp.
    """
    if torch.is_grad_enabled():  # training: out= has no backward
        return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
    out = mag.new_empty(*mag.shape, 2)  # (..., F, 2): real and imaginary parts interleaved
    torch.mul(mag, torch.cos(phase), out=out[..., 0])
    torch.mul(mag, torch.sin(phase), out=out[..., 1])
    return torch.view_as_complex(out)


def spectral_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype the inverse transforms run in: float32 for half-precision activations
    (half-precision FFTs are inexact, and unsupported for sizes that are not powers of two), float64
    for a ``.double()`` model, whose audio is then float64 as the reference's is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _finished(finish: Callable[[torch.Tensor], torch.Tensor], audio: Audio) -> Audio:
    """A head's ``finish`` applied to its audio, one tensor or one per item."""
    return [finish(a) for a in audio] if isinstance(audio, list) else finish(audio)


class ISTFTHead(nn.Module):
    """Predicts log-magnitude and phase of each STFT frame, then inverts the STFT."""

    def __init__(self, config: ISTFTHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.out = nn.Linear(config.dim, config.n_fft + 2)
        self.istft = ISTFT(config.n_fft, config.hop_length, config.n_fft, config.padding)

    def num_samples(self, frames: int) -> int:
        return self.istft.num_samples(frames)

    @property
    def synthesis(self) -> ISTFT:
        return self.istft

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> complex STFT frames ``(B, T, n_fft // 2 + 1)``."""
        # Spectral maths in float32 or float64, never half precision (spectral_dtype).
        # Frame-major (B, T, bins) throughout, unlike the reference's (B, bins, T): the inverse
        # FFT and overlap-add then run on contiguous frames.
        mag, phase = spectral_dtype(matmul_ways.linear(x, self.out)).chunk(2, dim=-1)  # (B, T, n_fft // 2 + 1) each
        mag = torch.exp(mag)
        # In place when no gradient flows: exp's backward needs its output unmodified.
        mag = mag.clamp(max=MAX_MAGNITUDE) if torch.is_grad_enabled() else mag.clamp_(max=MAX_MAGNITUDE)
        return polar(mag, phase)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> windowed time frames ``(B, T, n_fft)``, before overlap-add."""
        return self.istft.frames(self.spectrum(x))

    def finish(self, audio: torch.Tensor) -> torch.Tensor:
        return audio

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Audio:
        """``(B, T, dim)`` -> ``(B, S)``."""
        return self.istft(self.spectrum(x), lengths)


class _IMDCTHead(nn.Module):
    """What both IMDCT heads share: a linear layer to ``out_features`` per frame, whose MDCT coefficients
    (:meth:`coefficients`, per subclass) the inverse MDCT turns into audio."""

    def __init__(self, config: IMDCTSymExpHeadConfig | IMDCTCosHeadConfig, out_features: int) -> None:
        super().__init__()
        self.config = config
        self.out = nn.Linear(config.dim, out_features)
        self.imdct = IMDCT(config.mdct_frame_len, config.padding)
        self.clip_audio = config.clip_audio

    def num_samples(self, frames: int) -> int:
        return self.imdct.num_samples(frames)

    @property
    def synthesis(self) -> IMDCT:
        return self.imdct

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> MDCT coefficients ``(B, T, N)``."""
        raise NotImplementedError

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> windowed time frames ``(B, T, 2N)``, before overlap-add."""
        return self.imdct.frames(self.coefficients(x))

    def finish(self, audio: torch.Tensor) -> torch.Tensor:
        # The reference clips the coefficients here instead of the audio (returning them as audio);
        # clipping the audio is what its ``clip_audio`` option means, so that is what we do.
        return audio.clamp(-1.0, 1.0) if self.clip_audio else audio

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Audio:
        """``(B, T, dim)`` -> ``(B, S)``."""
        audio = self.imdct(self.coefficients(x), lengths)
        return _finished(self.finish, audio)


class IMDCTSymExpHead(_IMDCTHead):
    """Predicts MDCT coefficients in symlog domain, then inverts the MDCT."""

    def __init__(self, config: IMDCTSymExpHeadConfig) -> None:
        super().__init__(config, config.mdct_frame_len // 2)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> MDCT coefficients ``(B, T, N)``."""
        return symexp(spectral_dtype(matmul_ways.linear(x, self.out))).clip(-MAX_MAGNITUDE, MAX_MAGNITUDE)


class IMDCTCosHead(_IMDCTHead):
    """Predicts MDCT magnitude and phase, then inverts the MDCT of ``m * cos(p)``."""

    def __init__(self, config: IMDCTCosHeadConfig) -> None:
        super().__init__(config, config.mdct_frame_len)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> MDCT coefficients ``(B, T, N)``."""
        m, p = spectral_dtype(matmul_ways.linear(x, self.out)).chunk(2, dim=2)
        m = torch.exp(m).clip(max=MAX_MAGNITUDE)
        return m * torch.cos(p)


Head = ISTFTHead | IMDCTSymExpHead | IMDCTCosHead


def build_head(config: HeadConfig) -> Head:
    if isinstance(config, ISTFTHeadConfig):
        return ISTFTHead(config)
    if isinstance(config, IMDCTSymExpHeadConfig):
        return IMDCTSymExpHead(config)
    return IMDCTCosHead(config)
