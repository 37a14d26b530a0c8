"""The HiFi-GAN log-mel front-end: audio ``(B, S)`` -> ``(B, n_mels, T)`` as jik876/hifi-gan computes it.

Most open TTS systems (Matcha-TTS, Grad-TTS, VITS-style models, FastSpeech2 ports) emit the mel of
hifi-gan's ``meldataset.mel_spectrogram(..., center=False)``:

1. reflect-pad the audio by ``(n_fft - hop) // 2`` on both sides, then ``torch.stft(center=False)``
   with a Hann window of ``win_length`` (``padding="same"``);
2. magnitude ``sqrt(re² + im² + 1e-9)``;
3. ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (Slaney mel scale, Slaney area
   normalisation: librosa's defaults) applied to the magnitude;
4. ``log(clamp(x, min=1e-5))`` (hifi-gan's ``spectral_normalize_torch``).

The filterbank is built here (numpy, float64 then float32, the same operations as librosa), so
librosa is not needed at run time. The module holds its window and filterbank as buffers under the
keys torchaudio's ``MelSpectrogram`` uses (``mel_spec.spectrogram.window`` ``(win_length,)`` and
``mel_spec.mel_scale.fb`` ``(n_freqs, n_mels)``), which is also the layout of checkpoints trained
with Vocos PR #47, whose Slaney front-end this module computes with ``log_floor=1e-7, magnitude_eps=0``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .config import HiFiGANMelSpectrogramFeaturesConfig
from .feature_extractors import SpectrogramWindow
from .spectral_ops import Float32Buffers, pad_for_stft

# librosa's Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(freq: float) -> float:
    """``librosa.hz_to_mel(freq, htk=False)`` for a scalar."""
    if freq >= _MIN_LOG_HZ:
        return _MIN_LOG_MEL + float(np.log(freq / _MIN_LOG_HZ)) / _LOGSTEP
    return freq / _F_SP


def mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    """``librosa.mel_to_hz(mels, htk=False)`` for a float64 array."""
    freqs = _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    freqs[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_t] - _MIN_LOG_MEL))
    return freqs


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                          f_max: float | None = None) -> np.ndarray:
    """``librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=)``, defaults otherwise: ``(n_mels, n_fft // 2 + 1)``.

    float32; Slaney mel scale and Slaney area normalisation (each triangle scaled by ``2 / bandwidth`` in Hz);
    same operations in the same order and precision as librosa, so the result is bit-identical or
    within one float32 rounding of it.
    """
    f_max = float(sample_rate) / 2 if f_max is None else f_max
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(f_min), hz_to_mel_slaney(f_max), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)  # (n_mels + 2, n_freqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))  # rounded to float32 here, as in librosa
    enorm = 2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


class _SlaneyMelScale(Float32Buffers):
    """Slaney filterbank under ``mel_spec.mel_scale.fb``, ``(n_freqs, n_mels)`` (torchaudio's layout)."""

    fb: torch.Tensor

    def __init__(self, config: HiFiGANMelSpectrogramFeaturesConfig) -> None:
        super().__init__()
        fb = slaney_mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.f_min, config.f_max)
        self.register_buffer("fb", torch.from_numpy(fb.T.copy()))


class _MelSpec(nn.Module):
    def __init__(self, config: HiFiGANMelSpectrogramFeaturesConfig) -> None:
        super().__init__()
        self.spectrogram = SpectrogramWindow(config.win_length)
        self.mel_scale = _SlaneyMelScale(config)


class HiFiGANMelSpectrogramFeatures(nn.Module):
    """hifi-gan's ``mel_spectrogram``: Slaney log-mel of a ``sqrt(|X|² + eps)`` STFT magnitude."""

    def __init__(self, config: HiFiGANMelSpectrogramFeaturesConfig) -> None:
        super().__init__()
        self.config = config
        self.mel_spec = _MelSpec(config)

    def num_frames(self, samples: int) -> int:
        """Frames for ``samples`` audio samples: ``S // hop`` ("same", n_fft - hop even) or ``S // hop + 1``."""
        cfg = self.config
        if cfg.padding == "center":
            return samples // cfg.hop_length + 1
        pad = (cfg.n_fft - cfg.hop_length) // 2
        return (samples + 2 * pad - cfg.n_fft) // cfg.hop_length + 1

    def forward(self, audio: torch.Tensor, bandwidth_id: object = None) -> torch.Tensor:
        """``(..., S)`` -> ``(..., n_mels, T)`` float32, T = :meth:`num_frames` (S): ``(B, S)`` -> ``(B, n_mels, T)``,
        ``(S,)`` -> ``(n_mels, T)``, as the mel front-end takes them; ``bandwidth_id`` is ignored, as there."""
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
        spec = torch.stft(padded, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, window=window,
                          center=False, normalized=False, onesided=True, return_complex=True)
        if cfg.magnitude_eps:
            magnitude = torch.view_as_real(spec).pow(2).sum(-1).add(cfg.magnitude_eps).sqrt()  # (B, n_freqs, T)
        else:
            magnitude = spec.abs()
        # (n_mels, n_freqs) @ (B, n_freqs, T) -> (B, n_mels, T), as meldataset's matmul(mel_basis, spec)
        mel = torch.matmul(self.mel_spec.mel_scale.fb.T, magnitude)
        return torch.log(torch.clamp(mel, min=cfg.log_floor))
