"""Feature extractors: audio ``(B, S)`` -> features ``(B, C, T)`` for the backbone."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from .config import EncodecFeaturesConfig, MelSpectrogramFeaturesConfig
from .inputs import one_bandwidth_id
from .spectral_ops import LOG_CLIP, Float32Buffers, mel_filterbank, pad_for_stft, stft_magnitude
from .steps import Steps, mapped, run_steps

if TYPE_CHECKING:
    from .encodec import EncodecEncoder

# EnCodec 24 kHz: 1024-entry codebooks at 75 frames/s, so each codebook costs 10 bits * 75 = 750 bit/s.
ENCODEC_BINS = 1024
ENCODEC_FRAME_RATE = 75
ENCODEC_DIM = 128
BITS_PER_CODEBOOK_PER_SECOND = math.log2(ENCODEC_BINS) * ENCODEC_FRAME_RATE


def codebooks_for_bandwidth(kbps: float) -> int:
    """Codebooks EnCodec uses at a bandwidth: 1.5 -> 2, 3 -> 4, 6 -> 8, 12 -> 16."""
    return max(1, math.floor(kbps * 1000 / BITS_PER_CODEBOOK_PER_SECOND))


class SpectrogramWindow(Float32Buffers):
    """Holds the STFT's Hann window of ``length`` under the reference's key ``mel_spec.spectrogram.window``."""

    window: torch.Tensor

    def __init__(self, length: int) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(length))


class _MelScale(Float32Buffers):
    """Holds the filterbank under the reference's key ``mel_spec.mel_scale.fb``, ``(n_freqs, n_mels)``."""

    fb: torch.Tensor

    def __init__(self, n_freqs: int, n_mels: int, sample_rate: int) -> None:
        super().__init__()
        self.register_buffer("fb", mel_filterbank(n_freqs, n_mels, sample_rate))


class _MelSpec(nn.Module):
    """The reference's ``mel_spec`` (a torchaudio ``MelSpectrogram``): its buffers under the same keys, and
    its size attributes, which callers read (``mel_spec.hop_length``)."""

    def __init__(self, config: MelSpectrogramFeaturesConfig) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = config.sample_rate, config.n_fft, config.hop_length
        self.win_length, self.n_mels = config.n_fft, config.n_mels
        self.spectrogram = SpectrogramWindow(config.n_fft)
        self.mel_scale = _MelScale(config.n_fft // 2 + 1, config.n_mels, config.sample_rate)


class MelSpectrogramFeatures(nn.Module):
    """Log-mel spectrogram, magnitude (power 1) STFT, HTK mel scale without normalisation."""

    def __init__(self, config: MelSpectrogramFeaturesConfig) -> None:
        super().__init__()
        self.config = config
        self.mel_spec = _MelSpec(config)

    @property
    def padding(self) -> str:
        """``center`` or ``same``: the reference's attribute."""
        return self.config.padding

    def forward(self, audio: torch.Tensor, bandwidth_id: object = None) -> torch.Tensor:
        """``(..., S)`` -> ``(..., n_mels, T)``, e.g. ``(B, S)`` -> ``(B, n_mels, T)`` and ``(S,)`` ->
        ``(n_mels, T)``; T = S // hop + 1 (center) or S // hop (same).

        Any leading dimensions, as the reference's torchaudio ``MelSpectrogram``; ``bandwidth_id`` is
        ignored, as the reference ignores the keyword arguments ``Vocos.forward`` passes on.
        """
        mel = self.frames(self.pad(audio.reshape(-1, audio.shape[-1])))  # (N, S) -> (N, n_mels, T)
        return mel.reshape(*audio.shape[:-1], *mel.shape[1:])

    def pad(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, S + 2 * pad)`` float32, padded for the STFT's windows (:func:`pad_for_stft`)."""
        cfg = self.config
        return pad_for_stft(audio, cfg.n_fft, cfg.hop_length, cfg.padding)

    def frames(self, padded: torch.Tensor) -> torch.Tensor:
        """Padded audio ``(B, S')`` -> ``(B, n_mels, (S' - n_fft) // hop + 1)``, a frame per full window."""
        cfg = self.config
        window = self.mel_spec.spectrogram.window
        spec = stft_magnitude(padded, cfg.n_fft, cfg.hop_length, window, center=False)
        # (B, n_freqs, T) -> (B, T, n_freqs) @ (n_freqs, n_mels) -> (B, T, n_mels) -> (B, n_mels, T)
        mel = torch.matmul(spec.transpose(1, 2), self.mel_spec.mel_scale.fb).transpose(1, 2)
        return torch.log(torch.clip(mel, min=LOG_CLIP))


class Spectrogram(Protocol):
    """A front-end that pads the audio once and then reads full windows: ``forward = frames(pad(audio))``."""

    def pad(self, audio: torch.Tensor) -> torch.Tensor: ...

    def frames(self, padded: torch.Tensor) -> torch.Tensor: ...


# Frames per unit of spectrogram_steps: about 22 s of audio at hop 256, 6-11 ms on 2 cores (docs/streaming.md).
SPECTROGRAM_UNIT_FRAMES = 2048


def spectrogram_steps(extractor: Spectrogram, audio: torch.Tensor, n_fft: int, hop_length: int) -> Steps:
    """``extractor(audio)`` ``(B, S)`` -> ``(B, n_mels, T)`` as :data:`~vocos_core.steps.Steps`, a unit
    and a piece per :data:`SPECTROGRAM_UNIT_FRAMES` frames: each frame reads its own window of the
    padded audio, so the pieces are the frames of one whole pass (to float32 rounding)."""
    padded = extractor.pad(audio)
    total = (padded.shape[-1] - n_fft) // hop_length + 1
    for start in range(0, total, SPECTROGRAM_UNIT_FRAMES):
        end = min(total, start + SPECTROGRAM_UNIT_FRAMES)
        yield extractor.frames(padded[..., start * hop_length : (end - 1) * hop_length + n_fft])


class EncodecFeatures(nn.Module):
    """EnCodec codes -> sum of their codebook embeddings, ``(B, 128, L)``.

    Holds only ``codebook_weights`` (all codebooks stacked, ``(n_q * 1024, 128)``), as the official
    checkpoint does. The EnCodec encoder is loaded on first use of the audio path only.
    """

    def __init__(self, config: EncodecFeaturesConfig, encodec_weights: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.bandwidths = config.bandwidths
        self.num_q = codebooks_for_bandwidth(max(config.bandwidths))
        self.codebook_weights = nn.Parameter(torch.zeros(self.num_q * ENCODEC_BINS, ENCODEC_DIM),
                                             requires_grad=False)
        self.encodec_weights = encodec_weights
        # A plain attribute (not a registered submodule): the checkpoint holds no encoder keys.
        self._encoder: EncodecEncoder | None = None

    @property
    def encoder_loaded(self) -> bool:
        return self._encoder is not None

    def weights_path(self) -> Path:
        """The EnCodec weights file the encoder loads from (it may not exist yet)."""
        from .encodec.weights import expected_path

        return expected_path(self.encodec_weights)

    def encoder(self) -> EncodecEncoder:
        """The EnCodec encoder + quantizer, loaded once on first call, on this module's device."""
        if self._encoder is not None:
            return self._encoder
        from .encodec import load_encodec_encoder

        encoder = load_encodec_encoder(self.encodec_weights).to(self.codebook_weights.device)
        # Bypass nn.Module registration: as a submodule it would join state_dict() (the
        # official checkpoint has no encoder keys) and follow dtype casts.
        object.__setattr__(self, "_encoder", encoder)
        return encoder

    def _apply(self, fn, recurse=True):
        # The lazily loaded encoder follows the model's device but stays float32: its codes are
        # only those of the reference when computed in full precision.
        super()._apply(fn, recurse)
        if self._encoder is not None:
            self._encoder.to(self.codebook_weights.device)
        return self

    def codes_to_features(self, codes: torch.Tensor) -> torch.Tensor:
        """``(K, B, L)`` codes -> ``(B, 128, L)``: sum over codebooks of their embeddings."""
        # Codebook k's rows start at k * 1024 in the stacked table; one lookup covers all codebooks.
        offsets = torch.arange(0, ENCODEC_BINS * codes.shape[0], ENCODEC_BINS, device=codes.device)
        features = nn.functional.embedding(codes + offsets.view(-1, 1, 1), self.codebook_weights).sum(dim=0)
        return features.transpose(1, 2)  # (B, L, 128) -> (B, 128, L)

    def forward(self, audio: torch.Tensor, bandwidth_id: torch.Tensor | int | None = None) -> torch.Tensor:
        """``(B, S)`` audio at 24 kHz -> ``(B, 128, L)``, L = ceil(S / 320); ``bandwidth_id`` an int or a
        one-element tensor (the reference's ``tensor([i])``), required."""
        return run_steps(self.steps(audio, one_bandwidth_id(bandwidth_id, self.bandwidths)))

    def steps(self, audio: torch.Tensor, bandwidth_id: int) -> Steps:
        """:meth:`forward` as :data:`~vocos_core.steps.Steps`, a unit per layer of each chunk of the
        EnCodec encoder (``vocos_core.encodec.seanet``), a span's features as soon as it is done;
        the arguments are checked at once."""
        return mapped(self.encoder().encode_steps(audio, self.bandwidths[bandwidth_id]), self.codes_to_features)
