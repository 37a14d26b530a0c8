"""Compare Vocos models with Griffin-Lim on held-out speech: PESQ (wideband), mel L1, MR-STFT distance.

    python scripts/eval_vocoder.py FILELIST MODEL [MODEL ...] [--untrained CKPT] [--json OUT] [--per-voice]

Each MODEL is a Hub-layout directory (or Hub id). ``--untrained CKPT`` adds the generator of the
Lightning checkpoint's config as it was before training (same seed as the run, so the same
initial weights). Griffin-Lim (torchaudio's ``griffinlim`` algorithm, 32 iterations, momentum 0.99) inverts the
same log-mel the models decode, through the filterbank's pseudo-inverse. Audio is compared at the
model rate (mel L1, MR-STFT) and at 16 kHz (PESQ), whole utterances, peak-normalised to -3 dBFS.
``--per-voice`` adds a PESQ table per voice, the voice read from the file name as
``make_speech_corpus.py`` writes it (``<split>_<index>_<voice>.wav``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocos_core.pretrained import Vocos
from vocos_core.training import metrics
from vocos_core.training.data import VAL_GAIN_DB, load_audio, read_filelist
from vocos_core.training.loss import MelSpecReconstructionLoss

GL_ITERATIONS = 32
SEED = 4444


def griffinlim(magnitude: torch.Tensor, n_fft: int, hop_length: int, n_iter: int, momentum: float,
               length: int) -> torch.Tensor:
    """Fast Griffin-Lim, the algorithm and defaults of ``torchaudio.functional.griffinlim`` (random
    initial phases, momentum), written out: torchaudio's wheels cannot load beside this torch build.
    ``(B, n_fft // 2 + 1, T)`` magnitude -> ``(B, length)``."""
    window = torch.hann_window(n_fft)
    alpha = momentum / (1 + momentum)
    angles = torch.rand(magnitude.shape, dtype=torch.complex64)
    previous = torch.zeros((), dtype=torch.complex64)
    for _ in range(n_iter):
        inverse = torch.istft(magnitude * angles, n_fft, hop_length, n_fft, window, length=length)
        rebuilt = torch.stft(inverse, n_fft, hop_length, n_fft, window, pad_mode="reflect", return_complex=True)
        angles = rebuilt - previous * alpha
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return torch.istft(magnitude * angles, n_fft, hop_length, n_fft, window, length=length)


def griffin_lim(model: Vocos, mel: torch.Tensor, length: int) -> torch.Tensor:
    """``(1, n_mels, T)`` log-mel -> ``(1, length)`` audio by Griffin-Lim on the pseudo-inverted magnitude."""
    cfg = model.config.feature_extractor
    fb = model.feature_extractor.mel_spec.mel_scale.fb  # type: ignore[union-attr]  # (n_freqs, n_mels)
    magnitude = (torch.linalg.pinv(fb.T) @ mel.exp()).clamp_min(0.0)  # (1, n_freqs, T)
    torch.manual_seed(SEED)
    return griffinlim(magnitude, cfg.n_fft, cfg.hop_length, GL_ITERATIONS, 0.99, length)  # type: ignore[union-attr]


def untrained(ckpt: Path) -> Vocos:
    from vocos_core.training.experiment import VocosExp

    hparams = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
    torch.manual_seed(SEED)  # the run's seed_everything: the generator's initial weights
    return VocosExp(**{k: v for k, v in hparams.items() if not k.startswith("_")}).generator()


def voice_of(path: str) -> str:
    """``.../val_0007_en-gb_m4.wav`` -> ``en-gb_m4``."""
    return Path(path).stem.split("_", 2)[-1]


def score(name: str, outputs: list[torch.Tensor], refs: list[torch.Tensor], sr: int,
          mel_loss: MelSpecReconstructionLoss) -> dict[str, Any]:
    pesq, mel, mrstft = [], [], []
    for y_hat, y in zip(outputs, refs, strict=True):
        n = min(y_hat.shape[-1], y.shape[-1])
        y_hat, y = y_hat[..., :n], y[..., :n]
        pesq.append(metrics.pesq_wb(metrics.to_16k(y, sr), metrics.to_16k(y_hat, sr)))
        mel.append(float(mel_loss(y_hat, y)))
        mrstft.append(float(metrics.mrstft_distance(y_hat, y)))
    return {"model": name, "pesq_wb": float(np.nanmean(pesq)), "mel_l1": float(np.mean(mel)),
            "mrstft": float(np.mean(mrstft)), "items": len(refs), "pesq_items": pesq}


def print_per_voice(rows: list[dict[str, Any]], voices: list[str]) -> None:
    print("\n| voice | utterances | " + " | ".join(f"PESQ wb, {r['model']}" for r in rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for voice in sorted(set(voices)):
        mine = [i for i, v in enumerate(voices) if v == voice]
        cells = [f"{np.nanmean([r['pesq_items'][i] for i in mine]):.3f}" for r in rows]
        print(f"| {voice} | {len(mine)} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("filelist")
    ap.add_argument("models", nargs="*")
    ap.add_argument("--untrained", type=Path, help="Lightning checkpoint whose untrained generator to add")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--per-voice", action="store_true", help="also PESQ per voice (make_speech_corpus.py names)")
    args = ap.parse_args()
    models = {m: Vocos.from_pretrained(m) for m in args.models}
    if args.untrained:
        models["untrained (step 0)"] = untrained(args.untrained)
    first = next(iter(models.values()))
    sr = first.sample_rate
    mel_loss = MelSpecReconstructionLoss(sample_rate=sr)
    refs, paths = [], read_filelist(args.filelist)
    for path in paths:
        refs.append(load_audio(path, sr, VAL_GAIN_DB)[None])
    rows = []
    with torch.inference_mode():
        mels = [first.audio_to_features(y) for y in refs]
        rows.append(score(f"Griffin-Lim ({GL_ITERATIONS} it.)", [griffin_lim(first, m, y.shape[-1])
                                                                 for m, y in zip(mels, refs, strict=True)],
                          refs, sr, mel_loss))
        for name, model in models.items():
            outputs = [model.decode(model.audio_to_features(y)) for y in refs]
            rows.append(score(name, outputs, refs, sr, mel_loss))
    print("| model | PESQ wb | mel L1 | MR-STFT |\n|---|---|---|---|")
    for r in rows:
        pesq = "n/a" if math.isnan(r["pesq_wb"]) else f"{r['pesq_wb']:.3f}"
        print(f"| {r['model']} | {pesq} | {r['mel_l1']:.3f} | {r['mrstft']:.3f} |")
    if args.per_voice:
        print_per_voice(rows, [voice_of(p) for p in paths])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
