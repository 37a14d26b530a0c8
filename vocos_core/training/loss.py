"""The losses of the Vocos recipe: hinge GAN, feature matching and log-mel L1 reconstruction.

Same maths (and the same ``(1,)``-shaped sums) as vocos 0.1.0's ``vocos.loss``; the mel
spectrogram is vocos_core's own (:class:`~vocos_core.feature_extractors.MelSpectrogramFeatures`,
torch only), which equals torchaudio's ``MelSpectrogram(center=True, power=1)`` the reference uses.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import MelSpectrogramFeaturesConfig
from ..feature_extractors import MelSpectrogramFeatures


class MelSpecReconstructionLoss(nn.Module):
    """L1 distance between the log-mel spectrograms of generated and real audio."""

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 100) -> None:
        super().__init__()
        self.mel_spec = MelSpectrogramFeatures(
            MelSpectrogramFeaturesConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                         n_mels=n_mels, padding="center"))

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(B, n_mels, T)``, ``log(max(mel, 1e-7))`` as the reference's ``safe_log``."""
        return self.mel_spec(audio)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Generated and real audio ``(B, S)`` -> scalar mean absolute log-mel difference."""
        return nn.functional.l1_loss(self.log_mel(y), self.log_mel(y_hat))


class GeneratorLoss(nn.Module):
    """Hinge loss pushing each sub-discriminator's score on generated audio above 1."""

    def forward(self, disc_outputs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scores of generated audio -> (sum ``(1,)``, one mean per sub-discriminator)."""
        losses = [torch.clamp(1 - dg, min=0).mean() for dg in disc_outputs]
        return _sum(losses, disc_outputs[0]), losses


class DiscriminatorLoss(nn.Module):
    """Hinge loss: real scores above 1, generated scores below -1."""

    def forward(self, disc_real_outputs: list[torch.Tensor], disc_generated_outputs: list[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """-> (sum over sub-discriminators of both terms ``(1,)``, real terms, generated terms)."""
        real = [torch.clamp(1 - dr, min=0).mean() for dr in disc_real_outputs]
        gen = [torch.clamp(1 + dg, min=0).mean() for dg in disc_generated_outputs]
        pairs = [r + g for r, g in zip(real, gen, strict=True)]
        return _sum(pairs, disc_real_outputs[0]), real, gen


class FeatureMatchingLoss(nn.Module):
    """Sum over sub-discriminators and layers of the mean absolute feature-map difference."""

    def forward(self, fmap_r: list[list[torch.Tensor]], fmap_g: list[list[torch.Tensor]]) -> torch.Tensor:
        """Real and generated feature maps -> ``(1,)``."""
        terms = [torch.mean(torch.abs(rl - gl))
                 for dr, dg in zip(fmap_r, fmap_g, strict=True) for rl, gl in zip(dr, dg, strict=True)]
        return _sum(terms, fmap_r[0][0])


def _sum(terms: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Sum of scalar terms as a ``(1,)`` tensor, accumulated in order as the reference does."""
    total = torch.zeros(1, device=like.device, dtype=like.dtype)
    for t in terms:
        total = total + t
    return total
