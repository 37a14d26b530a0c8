"""What a low-latency stream gives up: its audio against the offline decode, at each lookahead.

    python scripts/low_latency.py FILELIST MODEL [--lookahead 0 3 6 9 13 18] [--json OUT]

Each utterance of FILELIST (peak-normalised to -3 dBFS, at the model rate) is turned into the model's
features and decoded offline, then streamed in chunks of 5 to 20 frames (seeded) with each
``lookahead_frames``. Printed per lookahead, over the utterances: the error against the offline decode
(relative L2, and as an SNR in dB), wideband PESQ of the stream against the utterance beside the
offline decode's, and the stream's compute time against the exact stream's (one stream at a time,
torch's default threads).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stream_load import chunk_sizes

from vocos_core.pretrained import Vocos
from vocos_core.training import metrics
from vocos_core.training.data import VAL_GAIN_DB, load_audio, read_filelist

DEFAULT_LOOKAHEADS = (0, 3, 6, 9, 13, 18)


def stream(model: Vocos, features: torch.Tensor, sizes: list[int],
           lookahead_frames: int | None) -> tuple[torch.Tensor, float]:
    """``features`` ``(C, T)`` streamed in ``sizes`` -> the audio ``(S,)`` and the compute seconds."""
    s, pieces, t, start = model.stream(lookahead_frames=lookahead_frames), [], 0, time.perf_counter()
    for n in sizes:
        pieces.append(s.push(features[:, t:t + n]))
        t += n
    pieces.append(s.flush())
    return torch.cat(pieces), time.perf_counter() - start


def measure(model: Vocos, paths: list[str], lookaheads: list[int]) -> list[dict[str, Any]]:
    """One row per lookahead (the exact one first) over every utterance of ``paths``."""
    sr, exact_frames = model.sample_rate, model.lookahead.frames
    shorter = [a for a in dict.fromkeys(lookaheads) if a < exact_frames]  # once each; the exact row comes first
    rows: dict[int, dict[str, list[float]]] = {a: {"error": [], "pesq": [], "seconds": []}
                                               for a in [exact_frames, *shorter]}
    offline_pesq, audio_seconds = [], 0.0
    for i, path in enumerate(paths):
        y = load_audio(path, sr, VAL_GAIN_DB)
        features = model.audio_to_features(y)[0]
        offline = model.decode(features[None])[0]
        n = min(offline.shape[0], y.shape[0])
        reference = metrics.to_16k(y[None, :n], sr)  # resampled once, for the offline decode and every stream
        offline_pesq.append(metrics.pesq_wb(reference, metrics.to_16k(offline[None, :n], sr)))
        audio_seconds += offline.shape[0] / sr
        sizes = chunk_sizes(features.shape[1], 5, 20, np.random.default_rng(i))  # stream_load.py's simulated TTS
        for ahead, row in rows.items():
            out, seconds = stream(model, features, sizes, ahead)
            row["error"].append(float((out - offline).norm() / offline.norm()))
            row["pesq"].append(metrics.pesq_wb(reference, metrics.to_16k(out[None, :n], sr)))
            row["seconds"].append(seconds)
    exact_cost = sum(rows[exact_frames]["seconds"]) / audio_seconds
    return [{"lookahead_frames": a, "lookahead_ms": round(model.stream(lookahead_frames=a).lookahead.ms, 1),
             "relative_l2": float(np.mean(r["error"])),
             "snr_db": float(np.mean([-20 * math.log10(max(e, 1e-12)) for e in r["error"]])),
             "pesq_wb": float(np.nanmean(r["pesq"])), "pesq_wb_offline": float(np.nanmean(offline_pesq)),
             "cost_vs_exact": sum(r["seconds"]) / audio_seconds / exact_cost, "items": len(paths)}
            for a, r in rows.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("filelist")
    ap.add_argument("model", help="a Hub-layout directory or Hub id")
    ap.add_argument("--lookahead", type=int, nargs="+", default=list(DEFAULT_LOOKAHEADS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    model = Vocos.from_pretrained(args.model)
    with torch.inference_mode():
        rows = measure(model, read_filelist(args.filelist), args.lookahead)
    print(f"{rows[0]['items']} utterances, chunks of 5-20 frames; the first row is the exact stream")
    print("| lookahead | relative L2 error | SNR vs offline | PESQ wb (offline decode: "
          f"{rows[0]['pesq_wb_offline']:.3f}) | compute vs exact |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lookahead_frames']} frames, {r['lookahead_ms']:g} ms | {r['relative_l2']:.2e} | "
              f"{r['snr_db']:.1f} dB | {r['pesq_wb']:.3f} | {r['cost_vs_exact']:.2f}× |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
