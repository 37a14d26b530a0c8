"""Where a mel vocoder's phase falls short of Griffin-Lim's, band by band (docs/training.md, the demo run).

    python scripts/phase_by_band.py FILELIST MODEL [--items 8] [--cutoffs 1000,2500,4000]

On the first ``--items`` utterances of FILELIST (peak-normalised as the validation set), prints:

1. PESQ (wideband) of the real STFT magnitudes resynthesised with the model's phase below a cut-off
   frequency and Griffin-Lim's above it, and the other way round: which band's phase costs PESQ;
2. per band, the magnitude-weighted phase-derivative distances of ``phase_loss.py`` (1 - cos of the
   difference, instantaneous frequency along time, group delay along frequency) of the model's and
   Griffin-Lim's output against the real audio.

Griffin-Lim is ``eval_vocoder.py``'s: 32 iterations on the pseudo-inverted mel of the same audio.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from eval_vocoder import griffin_lim

from vocos_core.pretrained import Vocos
from vocos_core.training import metrics
from vocos_core.training.data import VAL_GAIN_DB, load_audio, read_filelist
from vocos_core.training.phase_loss import derivative_distance

BANDS_HZ = ((0, 250), (250, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 8000))


def distance_by_band(s_hat: torch.Tensor, s: torch.Tensor, freqs: torch.Tensor, dim: int) -> list[float]:
    """``(F, T)`` complex pair -> per band of BANDS_HZ, the phase loss's distance (``dim`` 1: along time,
    instantaneous frequency; 0: along frequency, group delay) over that band's bins."""
    out = []
    for lo, hi in BANDS_HZ:
        band = ((freqs >= lo) & (freqs < hi)).nonzero()[:, 0]
        pair = (s_hat[None, band], s[None, band])  # (1, bins, T), the loss's layout
        out.append(float(derivative_distance(*pair, dim=dim + 1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("filelist")
    ap.add_argument("model")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--cutoffs", default="1000,2500,4000")
    args = ap.parse_args()
    model = Vocos.from_pretrained(args.model)
    sr, n_fft, hop = model.sample_rate, 1024, 256
    window = torch.hann_window(n_fft)
    freqs = torch.arange(n_fft // 2 + 1) * sr / n_fft

    def stft(y: torch.Tensor) -> torch.Tensor:  # (1, S) -> (F, T)
        return torch.stft(y, n_fft, hop, window=window, return_complex=True)[0]

    cutoffs = [int(c) for c in args.cutoffs.split(",")]
    pesq: dict[str, list[float]] = {}
    distances = {name: np.zeros((2, len(BANDS_HZ))) for name in ("model", "Griffin-Lim")}
    paths = read_filelist(args.filelist)[: args.items]
    for path in paths:
        y = load_audio(path, sr, VAL_GAIN_DB)[None]
        n = y.shape[-1]
        with torch.inference_mode():
            mel = model.audio_to_features(y)
            outputs = {"model": model.decode(mel)[..., :n], "Griffin-Lim": griffin_lim(model, mel, n)}
        s, s_model, s_gl = stft(y), stft(outputs["model"]), stft(outputs["Griffin-Lim"])
        mixes = {"model": outputs["model"], "Griffin-Lim": outputs["Griffin-Lim"],
                 "real magnitude, model phase": torch.polar(s.abs(), s_model.angle()),
                 "real magnitude, Griffin-Lim phase": torch.polar(s.abs(), s_gl.angle())}
        for cut in cutoffs:
            low = (freqs < cut)[:, None]
            mixes[f"real magnitude, model phase < {cut} Hz, Griffin-Lim's above"] = torch.polar(
                s.abs(), torch.where(low, s_model.angle(), s_gl.angle()))
            mixes[f"real magnitude, Griffin-Lim phase < {cut} Hz, model's above"] = torch.polar(
                s.abs(), torch.where(low, s_gl.angle(), s_model.angle()))
        reference = metrics.to_16k(y, sr)
        for name, mix in mixes.items():
            wave = mix if not mix.is_complex() else torch.istft(mix, n_fft, hop, window=window, length=n)[None]
            pesq.setdefault(name, []).append(metrics.pesq_wb(reference, metrics.to_16k(wave, sr)))
        for name, out in outputs.items():
            for d, dim in enumerate((1, 0)):  # along time: instantaneous frequency; along frequency: group delay
                distances[name][d] += np.array(distance_by_band(stft(out), s, freqs, dim)) / len(paths)
    print(f"PESQ wb, mean of {len(paths)} utterances")
    for name, scores in pesq.items():
        print(f"  {np.nanmean(scores):.3f}  {name}")
    print("phase-derivative distance by band (Hz): " + "  ".join(f"{lo}-{hi}" for lo, hi in BANDS_HZ))
    for name, (inst_freq, group_delay) in distances.items():
        print(f"  {name:12s} inst. frequency {np.round(inst_freq, 3)}  group delay {np.round(group_delay, 3)}")


if __name__ == "__main__":
    main()
