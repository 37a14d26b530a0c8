"""Compute the UTMOS fixture with SpeechMOS's own UTMOS22 strong learner.

Needs the reference venv (SpeechMOS imports torchaudio) and a checkout of tarepan/SpeechMOS v1.2.0,
NOT the project's venv:

    /work/ref-venv/bin/python scripts/make_utmos_fixture.py PATH/TO/SpeechMOS tests/data/training/utmos.pt

The weights are a deterministic formula (:func:`fill_utmos`, which the test fills in too, so the
fixture holds no weights and CI needs no weight file); the audio is :func:`audio_batch`. It stores
the wav2vec 2.0 frames and the scores. tests/vocos_core/training/test_utmos.py loads this module for
those two functions.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

SAMPLE_RATE = 16000
SAMPLES = (16000, 12345)  # item lengths: an odd frame count too (the transformer's pad-to-2 path)


def fill_utmos(model: nn.Module) -> None:
    """Overwrite every parameter with fixed pseudo-random values (a hash of the index, sorted by name;
    no RNG, so no version drift): weights at a fan-in scale, LayerNorm/GroupNorm gains near 1."""
    with torch.no_grad():
        for k, (name, t) in enumerate(sorted(model.state_dict().items())):
            x = torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 12.9898 + 78.233 * k) * 43758.5453
            noise = (x - torch.floor(x) - 0.5).reshape(t.shape)  # uniform in [-0.5, 0.5), std 0.2887
            norm = "norm" in name or "conv_layers.0.2" in name
            if name.endswith("bias") or name.endswith("_emb"):
                value = 0.1 * noise
            elif norm or name.endswith("weight_g"):
                value = 1.0 + 0.4 * noise
            else:
                fan_in = t[0].numel() if t.dim() > 1 else t.numel()
                value = noise * (math.sqrt(1.0 / fan_in) / 0.2887)
            t.copy_(value.to(t.dtype))


def audio_batch() -> list[torch.Tensor]:
    """16 kHz items of :data:`SAMPLES` lengths: a harmonic tone with vibrato in noise."""
    gen = torch.Generator().manual_seed(11)
    items = []
    for n, f0 in zip(SAMPLES, (120.0, 210.0), strict=True):
        t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
        phase = 2 * math.pi * torch.cumsum(f0 * (1 + 0.05 * torch.sin(2 * math.pi * 5 * t)), 0) / SAMPLE_RATE
        tone = sum(torch.sin(h * phase) / h for h in range(1, 10))
        items.append((0.2 * tone + 0.01 * torch.randn(n, generator=gen, dtype=torch.float64)).float())
    return items


def main(speechmos: Path, out: Path) -> None:
    sys.path.insert(0, str(speechmos))
    from speechmos.utmos22.strong.model import UTMOS22Strong

    model = UTMOS22Strong()
    fill_utmos(model)
    model.eval()
    fixture: dict[str, object] = {"frames": [], "scores": []}
    with torch.no_grad():
        for audio in audio_batch():  # one at a time: SpeechMOS has no per-item lengths
            fixture["frames"].append(model.wav2vec2(audio[None])[0])  # type: ignore[attr-defined]
            fixture["scores"].append(float(model(audio[None], SAMPLE_RATE)[0]))  # type: ignore[attr-defined]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, out)
    print(f"wrote {out}: scores {fixture['scores']} (torch {torch.__version__})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
