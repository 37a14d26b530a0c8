"""Compute the training-parity fixture from vocos 0.1.0's discriminators and losses.

Needs the reference venv (vocos 0.1.0 + torchaudio), NOT the project's:

    /work/ref-venv/bin/python scripts/make_training_fixtures.py tests/data/training/parity.pt

The discriminators' weights are not stored (the multi-period one alone has 41 M parameters): both
sides fill them with :func:`fill_parameters`, a deterministic formula, so the file keeps only the
inputs, the scores, samples of every feature map, and every loss (about 1.7 MB).
tests/vocos_core/training/test_parity.py loads this module for :func:`fill_parameters`.

Everything is computed in float64. In float32 the result depends on the CPU's summation order: the
reference's own float32 MPD scores moved by 1.1e-4 relative between an AVX-512 and an AVX2 machine (a
final convolution whose output is 30 times smaller than its input), so a float32 fixture made on one
machine fails a faithful implementation on another. In float64 that rounding is ~1e-13.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

SEGMENT = 8192  # audio samples per item: longer than the largest STFT window's reflect padding
BATCH = 2
BANDWIDTH_ID = 2
NUM_EMBEDDINGS = 4
# Feature-map elements kept per map: a strided sample, enough to see any layer that differs.
FMAP_SAMPLES = 256
# (sample rate, n_fft, hop, n_mels) of the mel losses checked: the recipe's default and 22.05 kHz.
MEL_SETTINGS = ((24000, 1024, 256, 100), (22050, 1024, 256, 80))
DTYPE = torch.float64  # of the weights, inputs and outputs (see above)


def fill_parameters(module: nn.Module) -> None:
    """Overwrite every parameter with a fixed smooth pattern (sorted by name; no RNG, so no version drift)."""
    with torch.no_grad():
        for k, (name, p) in enumerate(sorted(module.named_parameters())):
            idx = torch.arange(p.numel(), dtype=torch.float64)
            wave = torch.sin(idx * 0.618034 + k).reshape(p.shape)
            if name.endswith("weight_g"):
                value = 1.0 + 0.2 * wave
            elif name.endswith("bias"):
                value = 0.05 * wave
            elif name.endswith("emb.weight"):
                value = 0.1 * wave
            else:
                value = wave
            p.copy_(value.to(p.dtype))


def fmap_sample(x: torch.Tensor) -> torch.Tensor:
    """The strided sample of a feature map that the fixture keeps."""
    step = max(1, math.ceil(x.numel() / FMAP_SAMPLES))
    return x.detach().flatten()[::step].clone()


def audio_pair() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(17)
    t = torch.arange(SEGMENT) / 24000.0
    y = 0.4 * torch.sin(2 * math.pi * 220.0 * t) + 0.1 * torch.randn(BATCH, SEGMENT, generator=gen)
    y_hat = y + 0.05 * torch.randn(BATCH, SEGMENT, generator=gen)
    return y.to(DTYPE), y_hat.to(DTYPE)


def _discriminator_case(disc: nn.Module, y: torch.Tensor, y_hat: torch.Tensor, cond: bool) -> dict[str, Any]:
    from vocos.loss import DiscriminatorLoss, FeatureMatchingLoss, GeneratorLoss

    fill_parameters(disc.to(DTYPE))
    bandwidth = torch.tensor([BANDWIDTH_ID]) if cond else None
    with torch.no_grad():
        real, gen, fmap_r, fmap_g = disc(y=y, y_hat=y_hat, bandwidth_id=bandwidth)
        g_total, g_list = GeneratorLoss()(disc_outputs=gen)
        d_total, d_real, d_gen = DiscriminatorLoss()(disc_real_outputs=real, disc_generated_outputs=gen)
        fm = FeatureMatchingLoss()(fmap_r=fmap_r, fmap_g=fmap_g)
    return {
        "real": [r.clone() for r in real], "gen": [g.clone() for g in gen],
        "fmap_real": [[fmap_sample(m) for m in maps] for maps in fmap_r],
        "fmap_gen": [[fmap_sample(m) for m in maps] for maps in fmap_g],
        "fmap_shapes": [[tuple(m.shape) for m in maps] for maps in fmap_r],
        "generator_loss": (g_total, g_list), "discriminator_loss": (d_total, d_real, d_gen),
        "feature_matching_loss": fm,
        "state_dict_keys": sorted(disc.state_dict().keys()),
    }


def main(out: Path) -> None:
    import vocos
    from vocos.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
    from vocos.loss import MelSpecReconstructionLoss

    torch.manual_seed(0)
    y, y_hat = audio_pair()
    fixture: dict[str, Any] = {"vocos_version": getattr(vocos, "__version__", "0.1.0"), "torch": torch.__version__,
                               "y": y, "y_hat": y_hat, "bandwidth_id": BANDWIDTH_ID, "cases": {}, "mel": {}}
    for cond in (False, True):
        n = NUM_EMBEDDINGS if cond else None
        suffix = "_cond" if cond else ""
        fixture["cases"]["mpd" + suffix] = _discriminator_case(MultiPeriodDiscriminator(num_embeddings=n), y, y_hat,
                                                               cond)
        fixture["cases"]["mrd" + suffix] = _discriminator_case(MultiResolutionDiscriminator(num_embeddings=n), y,
                                                               y_hat, cond)
    for sr, n_fft, hop, n_mels in MEL_SETTINGS:
        loss = MelSpecReconstructionLoss(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels).to(DTYPE)
        with torch.no_grad():
            fixture["mel"][(sr, n_fft, hop, n_mels)] = loss(y_hat, y)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/training/parity.pt"))
