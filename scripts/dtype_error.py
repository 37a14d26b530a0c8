#!/usr/bin/env python3
"""Error of a model's bfloat16 and float16 decode against its float32 one, on real-speech mels, on CPU.

For each mel of ``tests/data/speech_mels/speech_mels.npz`` (nine utterances of synthetic speech, README
beside it) and each half dtype: the largest absolute difference from the float32 decode, over the float32
decode's peak, and the SNR (float32 power over difference power). Prints the range over the mels.

    python scripts/dtype_error.py [MODEL_DIR]      # default: the built-in demo model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from vocos_core import Vocos  # noqa: E402

MELS = ROOT / "tests" / "data" / "speech_mels" / "speech_mels.npz"
DEMO = ROOT / "vocos_core" / "builtin" / "demo-mel-24khz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(DEMO), help="Hub-layout mel model directory")
    args = ap.parse_args()
    mels = np.load(MELS)
    full = Vocos.from_pretrained(args.model)
    for dtype in (torch.bfloat16, torch.float16):
        half = Vocos.from_pretrained(args.model).to(dtype)
        peaks, snrs = [], []
        for key in mels.files:
            mel = torch.from_numpy(mels[key].astype(np.float32))[None]  # (1, 100, T)
            with torch.inference_mode():
                ref, out = full.decode(mel)[0].double(), half.decode(mel)[0].double()
            peaks.append(float((out - ref).abs().max() / ref.abs().max()))
            snrs.append(float(10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum())))
        print(f"{str(dtype).removeprefix('torch.')}: max |diff| / peak {min(peaks):.2g} to {max(peaks):.2g}, "
              f"SNR {min(snrs):.0f} to {max(snrs):.0f} dB over {len(peaks)} mels")


if __name__ == "__main__":
    main()
