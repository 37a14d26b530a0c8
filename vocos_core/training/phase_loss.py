"""An optional phase loss: instantaneous frequency and group delay of generated against real audio.

Not part of the reference recipe (its generator learns phase from the mel loss and the
discriminators); ``phase_loss_coeff`` is 0 in the reference configs. Without the discriminators
(their cost rules them out on a few CPU cores, docs/training.md) the mel loss alone leaves phase
poorly learnt, and mel L1 sees it only through the overlap-add's cancellations. This loss looks at
phase directly, as APNet's anti-wrapping phase losses do, through its two derivatives, which do not
depend on where the signal sits in absolute time: the phase advance from frame to frame
(instantaneous frequency) and from bin to bin (group delay).

For a pair of neighbouring STFT coefficients a, b the phase difference is the angle of b * conj(a);
the distance between generated and real differences is 1 - cos(difference), smooth and
unaffected by wrapping. Each pair is weighted by the real audio's magnitudes |a| |b|, so that
silent bins, whose phase means nothing, count for nothing.
"""

from __future__ import annotations

import torch
from torch import nn

_EPS = 1e-9


def _unit(z: torch.Tensor) -> torch.Tensor:
    return z / (z.abs() + _EPS)


def derivative_distance(s_hat: torch.Tensor, s: torch.Tensor, dim: int) -> torch.Tensor:
    """Weighted mean of 1 - cos(generated - real phase difference) between neighbours along ``dim``."""
    n = s.shape[dim]
    a, b = s.narrow(dim, 0, n - 1), s.narrow(dim, 1, n - 1)
    a_hat, b_hat = s_hat.narrow(dim, 0, n - 1), s_hat.narrow(dim, 1, n - 1)
    real = b * a.conj()  # |a| |b| e^{i (phase b - phase a)}
    weight = real.abs()
    # Re(u_hat * conj(u)) = cos(difference of the two phase differences), u the unit products.
    cosine = (_unit(b_hat * a_hat.conj()) * _unit(real).conj()).real
    return (weight * (1 - cosine)).sum() / (weight.sum() + _EPS)


class PhaseDerivativeLoss(nn.Module):
    """Instantaneous-frequency plus group-delay distance of ``(B, S)`` audio pairs, at one STFT resolution."""

    window: torch.Tensor

    def __init__(self, n_fft: int = 1024, hop_length: int = 256) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def spectrum(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> complex ``(B, n_fft // 2 + 1, T)``."""
        return torch.stft(audio.float(), self.n_fft, self.hop_length, window=self.window, return_complex=True)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Generated and real audio ``(B, S)`` -> scalar in [0, 4]: 0 when every weighted phase derivative matches."""
        s_hat, s = self.spectrum(y_hat), self.spectrum(y)
        return derivative_distance(s_hat, s, dim=2) + derivative_distance(s_hat, s, dim=1)
