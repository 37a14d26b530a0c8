"""Fourier-domain building blocks: mel filterbank, STFT magnitude, inverse STFT and inverse MDCT.

Written with torch alone (no torchaudio at run time). The filterbank and windows are built exactly
as the reference builds them, so the buffers stored in official checkpoints match ours. The inverse
transforms take optional per-item frame counts so that a padded batch gives each item exactly the
audio it would get alone: padded frames are zeroed before overlap-add and each item's window
envelope counts its own frames only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Same floor as the reference's ``safe_log``: keeps log finite on silent bins.
LOG_CLIP = 1e-7
# The reference refuses to divide by a window envelope below this (torch.istft's NOLA check).
ENVELOPE_EPS = 1e-11


class Float32Buffers(nn.Module):
    """Keeps this module's buffers (windows, filterbanks) float32 when the model moves to half precision.

    Spectral maths runs in float32 whatever the model dtype, so its constants must not be rounded:
    device moves apply, dtype changes do not.
    """

    def _apply(self, fn, recurse=True):
        before = {name: b for name, b in self._buffers.items() if b is not None}
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers[name]
            if new is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(new.device)
        return self


def hz_to_mel(freq: float) -> float:
    """HTK mel scale, as torchaudio's default ``mel_scale="htk"``."""
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK mel filterbank without area normalisation, ``(n_freqs, n_mels)``.

    Same arithmetic, in the same order and precision, as ``torchaudio.functional.melscale_fbanks``
    with ``norm=None, mel_scale="htk"``, which built the ``mel_scale.fb`` buffer of the checkpoints.
    """
    f_max = float(sample_rate // 2) if f_max is None else f_max
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))


def pad_for_stft(audio: torch.Tensor, n_fft: int, hop_length: int, padding: str) -> torch.Tensor:
    """``(B, S)`` -> ``(B, S + 2 * pad)`` float32, reflect-padded for an STFT's windows: ``n_fft / 2`` a side
    (center, as ``torch.stft`` pads) or ``(n_fft - hop) / 2`` (same, HiFi-GAN meldataset's
    ``int((n_fft - hop_size) / 2)``)."""
    # Features are computed in float32 whatever dtype the model was moved to: a half-precision
    # STFT is inexact (and unsupported for most sizes); decode casts them to the model's dtype.
    pad = stft_padding(n_fft, hop_length, padding)
    return nn.functional.pad(audio.float().unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)


def stft_padding(n_fft: int, hop_length: int, padding: str) -> int:
    """Samples :func:`pad_for_stft` adds on each side."""
    return n_fft // 2 if padding == "center" else (n_fft - hop_length) // 2


def min_stft_samples(n_fft: int, hop_length: int, padding: str) -> int:
    """Shortest audio :func:`pad_for_stft` and one STFT frame take: reflect padding needs more samples than it
    pads, and the padded audio must hold one whole window (which ``same`` padding alone may not give)."""
    pad = stft_padding(n_fft, hop_length, padding)
    return max(pad + 1, n_fft - 2 * pad)


def stft_magnitude(audio: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor,
                   center: bool) -> torch.Tensor:
    """``|STFT|`` of ``(B, S)`` audio -> ``(B, n_fft // 2 + 1, T)``; reflect padding when centred."""
    spec = torch.stft(audio, n_fft, hop_length=hop_length, win_length=window.numel(), window=window,
                      center=center, pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True)
    return spec.abs()


def frame_mask(lengths: torch.Tensor | None, batch: int, frames: int, device: torch.device) -> torch.Tensor | None:
    """``(B, T)`` bool, True on real frames; None when every item fills the batch (nothing to mask)."""
    if lengths is None:
        return None
    assert lengths.shape == (batch,), "lengths must hold one frame count per item"
    if bool((lengths == frames).all()):
        return None
    return torch.arange(frames, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def overlap_add(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Sum ``(B, W, T)`` windowed frames spaced ``hop_length`` apart -> ``(B, (T - 1) * hop + W)``."""
    win, n = frames.shape[1], frames.shape[2]
    size = (n - 1) * hop_length + win
    out = nn.functional.fold(frames, output_size=(1, size), kernel_size=(1, win), stride=(1, hop_length))
    return out[:, 0, 0, :]


def overlap_add_btw(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Overlap-add of ``(B, T, W)`` frames -> ``(B, (T - 1) * hop + W)``.

    With W split into R = ceil(W / hop) hop-sized pieces, piece j of frame t lands on output block
    t + j, so the whole sum is R strided adds of ``(B, T, hop)`` slices: no ``fold`` (col2im) and no
    transposed copy of the frames, which the frame-major layout from ``irfft(dim=-1)`` allows.
    """
    batch, n, win = frames.shape
    r = -(-win // hop_length)
    if r * hop_length != win:  # zero-extend the last piece; the extra samples are sliced off below
        frames = nn.functional.pad(frames, (0, r * hop_length - win))
    pieces = frames.reshape(batch, n, r, hop_length)
    out = frames.new_zeros(batch, n + r - 1, hop_length)
    for j in range(r):
        out[:, j:j + n] += pieces[:, :, j]
    return out.reshape(batch, -1)[:, : (n - 1) * hop_length + win]


class ISTFT(Float32Buffers):
    """Inverse STFT with the reference's two framings.

    ``center``: as ``torch.istft(..., center=True)``: trims ``n_fft // 2`` at both ends,
    giving ``(T - 1) * hop`` samples. ``same``: the reference's custom framing: trims
    ``(win - hop) // 2`` at both ends, giving ``T * hop`` samples.
    """

    window: torch.Tensor

    def __init__(self, n_fft: int, hop_length: int, win_length: int, padding: str = "same") -> None:
        super().__init__()
        self.padding = padding
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.register_buffer("window", torch.hann_window(win_length))
        self.trim = n_fft // 2 if padding == "center" else (win_length - hop_length) // 2

    def num_samples(self, frames: int) -> int:
        return (frames - 1) * self.hop_length + self.win_length - 2 * self.trim

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """``(B, T, n_fft // 2 + 1)`` complex (frame-major) -> ``(B, S)``, or a list of ``(S_i,)`` given lengths."""
        batch, n, _ = spec.shape
        mask = frame_mask(lengths, batch, n, spec.device)
        frames = self.frames(spec)
        if mask is not None:
            frames = frames.masked_fill(~mask[:, :, None], 0.0)
        audio = overlap_add_btw(frames, self.hop_length)
        envelope = self._envelope(n, mask, audio.dtype)
        audio = audio[:, self.trim:audio.shape[-1] - self.trim]
        envelope = envelope[:, self.trim:envelope.shape[-1] - self.trim]
        if lengths is None:
            return audio / envelope
        out = []
        for i, t in enumerate(lengths.tolist()):
            s = self.num_samples(int(t))
            out.append(audio[i, :s] / envelope[min(i, envelope.shape[0] - 1), :s])
        return out

    @property
    def hop(self) -> int:
        return self.hop_length

    def frames(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, T, n_fft // 2 + 1)`` complex -> windowed time frames ``(B, T, win)``, before overlap-add."""
        return torch.fft.irfft(spec, self.n_fft, dim=-1, norm="backward").mul_(self.window)

    def window_square(self) -> torch.Tensor | None:
        """``(win,)``: what each frame adds to the envelope the overlap-added audio is divided by."""
        return self.window.square()

    def _envelope(self, frames: int, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Overlap-added squared window, ``(1 or B, (T - 1) * hop + win)``, squared in the audio's ``dtype``
        (float64 for a ``.double()`` model, as the reference's)."""
        sq = self.window.to(dtype).square().expand(1, frames, -1)  # (1, T, win), no copy
        if mask is not None:
            sq = sq * mask[:, :, None].to(sq.dtype)
        env = overlap_add_btw(sq, self.hop_length)
        # Padded positions have a zero envelope; they are sliced off, but must not divide by zero.
        return env.clamp_min(ENVELOPE_EPS)


class IMDCT(Float32Buffers):
    """Inverse MDCT via FFT with the reference's buffers (cosine window, complex twiddles).

    No envelope division: the MDCT's time-domain aliasing cancellation makes plain overlap-add exact,
    so zeroed padded frames contribute nothing to real samples.
    """

    window: torch.Tensor
    pre_twiddle: torch.Tensor
    post_twiddle: torch.Tensor

    def __init__(self, frame_len: int, padding: str = "same") -> None:
        super().__init__()
        self.padding = padding
        self.frame_len = frame_len
        n = frame_len // 2
        n0 = (n + 1) / 2
        # scipy.signal.windows.cosine(frame_len), computed in float64 then stored as float32.
        window = torch.sin(math.pi / frame_len * (torch.arange(frame_len, dtype=torch.float64) + 0.5)).float()
        self.register_buffer("window", window)
        pre = torch.exp(1j * torch.pi * n0 * torch.arange(n * 2) / n)
        post = torch.exp(1j * torch.pi * (torch.arange(n * 2) + n0) / (n * 2))
        self.register_buffer("pre_twiddle", torch.view_as_real(pre))
        self.register_buffer("post_twiddle", torch.view_as_real(post))
        self.trim = frame_len // 2 if padding == "center" else frame_len // 4

    def num_samples(self, frames: int) -> int:
        return (frames + 1) * (self.frame_len // 2) - 2 * self.trim

    @property
    def hop(self) -> int:
        return self.frame_len // 2

    @property
    def win_length(self) -> int:
        return self.frame_len

    def frames(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``(B, L, N)`` MDCT coefficients -> windowed time frames ``(B, L, 2N)``, before overlap-add."""
        n = coeffs.shape[-1]
        spec = torch.cat([coeffs, -coeffs.flip(-1)], dim=-1).to(torch.promote_types(coeffs.dtype, torch.complex64))
        y = torch.fft.ifft(spec * torch.view_as_complex(self.pre_twiddle), dim=-1)
        y = torch.real(y * torch.view_as_complex(self.post_twiddle)) * math.sqrt(n) * math.sqrt(2)
        return y * self.window

    def window_square(self) -> torch.Tensor | None:
        """None: time-domain aliasing cancellation makes plain overlap-add exact, with no envelope."""
        return None

    def forward(self, coeffs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """``(B, L, N)`` real MDCT coefficients -> ``(B, S)``, or a list of ``(S_i,)`` given lengths."""
        batch, n_frames, n = coeffs.shape
        mask = frame_mask(lengths, batch, n_frames, coeffs.device)
        if mask is not None:
            coeffs = coeffs.masked_fill(~mask[:, :, None], 0.0)
        frames = self.frames(coeffs).transpose(1, 2)  # (B, L, 2N) -> (B, 2N, L) for overlap-add
        audio = overlap_add(frames, n)  # (B, (L + 1) * N)
        audio = audio[:, self.trim:audio.shape[-1] - self.trim]
        if lengths is None:
            return audio
        return [audio[i, : self.num_samples(int(t))] for i, t in enumerate(lengths.tolist())]
