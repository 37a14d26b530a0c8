"""The optional phase loss: zero exactly when the phase derivatives match, blind to what carries no phase."""

from __future__ import annotations

import math

import pytest
import torch

from vocos_core.training.phase_loss import PhaseDerivativeLoss, derivative_distance


def harmonic(n: int = 8192, f0: float = 150.0, sr: int = 24000, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / sr
    return sum(torch.sin(2 * math.pi * f0 * h * t + phase * h) / h for h in range(1, 6)).float()[None]


def test_identical_and_sign_flipped_audio_cost_nothing() -> None:
    loss = PhaseDerivativeLoss()
    y = harmonic()
    assert float(loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(-y, y)) == pytest.approx(0.0, abs=1e-6)  # a constant phase offset has no derivative


def test_a_global_phase_rotation_costs_nothing_but_a_wrong_frequency_does() -> None:
    s = torch.stft(harmonic(), 1024, 256, window=torch.hann_window(1024), return_complex=True)
    rotated = s * torch.polar(torch.ones(()), torch.tensor(2.0))
    for dim in (1, 2):
        assert float(derivative_distance(rotated, s, dim)) == pytest.approx(0.0, abs=1e-6)
    loss = PhaseDerivativeLoss()
    detuned = float(loss(harmonic(f0=155.0), harmonic()))
    shifted_harmonics = float(loss(harmonic(phase=1.0), harmonic()))  # the same sound 1.06 ms later
    assert detuned > 0.1
    assert 0 <= shifted_harmonics < detuned


def test_silent_bins_carry_no_weight_and_gradients_stay_finite() -> None:
    loss = PhaseDerivativeLoss()
    y = torch.cat([harmonic(4096), torch.zeros(1, 4096)], dim=1)
    noisy_tail = y.clone()
    noisy_tail[:, 6144:] = 1e-3 * torch.randn(1, 2048)  # noise where the real audio is silent
    assert float(loss(noisy_tail, y)) == pytest.approx(float(loss(y, y)), abs=1e-3)
    y_hat = torch.zeros_like(y, requires_grad=True)
    loss(y_hat, y).backward()
    assert y_hat.grad is not None and bool(y_hat.grad.isfinite().all())
