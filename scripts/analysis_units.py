"""Time the audio analysis of /resynthesize in one pass and unit by unit (``vocos_core.steps``).

    python scripts/analysis_units.py                 # EnCodec: 30 s at 6 kbps; mel: 600 s; 2 rounds

The server runs an upload's analysis in slices of at most ``STREAM_MAX_STEP_WAIT_MS``, a slice being
a few units (a convolution layer of one 32000-sample chunk); how long a stream step can wait behind a
slice depends on the longest unit. Prints, per round, the one-pass time, the unit-by-unit time, the
number of units and of pieces of output, the units' p50 and longest duration, and the largest
difference between the two results. One pass is every layer once over the whole signal (the
encoder's ``model`` as one ``nn.Sequential``; the mel front-end's ``forward``). EnCodec: an
official-size encoder with random weights (``vocos_core.encodec.testing``); mel: the built-in demo
model's front-end (n_fft 1024, hop 256, 100 mels, as the official mel model's).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vocos_core import Vocos
from vocos_core.builtin import DEMO_MEL_24KHZ
from vocos_core.encodec import load_encodec_encoder
from vocos_core.encodec.testing import write_random_encodec_weights
from vocos_core.steps import Steps, advance, join


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio for the EnCodec encoder")
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--mel-seconds", type=float, default=600.0, help="audio for the mel front-end")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_encodec_encoder(write_random_encodec_weights(Path(tmp) / "encodec.th", seed=0))
    mel = Vocos.from_pretrained(DEMO_MEL_24KHZ)
    audio, long_audio = _audio(args.seconds), _audio(args.mel_seconds)
    x = audio.unsqueeze(1)  # (B, S) -> (B, 1, S)
    for round_ in range(args.rounds):
        # One pass: every layer once over the whole signal, as the reference computes it.
        report(f"round {round_} EnCodec {args.seconds:g} s",
               lambda: encoder.quantizer.encode(encoder.encoder.model(x), encoder.frame_rate, args.bandwidth),
               lambda: encoder.encode_steps(audio, args.bandwidth))
        report(f"round {round_} mel {args.mel_seconds:g} s", lambda: mel.feature_extractor(long_audio),
               lambda: mel.audio_to_features_steps(long_audio))


def _audio(seconds: float) -> torch.Tensor:
    return 0.1 * torch.randn(1, int(24000 * seconds), generator=torch.Generator().manual_seed(0))


def report(name: str, one_pass: Callable[[], torch.Tensor], make_steps: Callable[[], Steps]) -> None:
    with torch.inference_mode():
        start = time.perf_counter()
        whole = one_pass()
        seconds = time.perf_counter() - start
        steps, units, done, pieces = make_steps(), [], False, []
        while not done:
            start = time.perf_counter()
            done, new = advance(steps, 0.0)
            units.append(time.perf_counter() - start)
            pieces += new
    difference = float((join(pieces).double() - whole.double()).abs().max())
    units.sort()
    print(f"{name}: one pass {seconds:.3f} s, unit by unit {sum(units):.3f} s, {len(units)} units, "
          f"{len(pieces)} pieces, p50 {units[len(units) // 2] * 1e3:.1f} ms, longest {units[-1] * 1e3:.1f} ms, "
          f"largest difference {difference:.1e}")


if __name__ == "__main__":
    main()
