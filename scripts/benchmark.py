"""Real-time factor of vocos_core, and its throughput against the reference implementation.

    python3 scripts/benchmark.py                                  # ours, CPU
    python3 scripts/benchmark.py --reference-python REFVENV/bin/python   # side by side, CPU
    python3 scripts/benchmark.py --device cuda --dtypes float32 bfloat16 float16   # GPU

Models are random-weight checkpoints of the official sizes (mel: dim 512, 8 layers; EnCodec: dim
384, 8 layers), so timings are those of the real models. Ours and the reference alternate in
rounds within one run; each figure is the best round's median. RTF = compute time / audio time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cases import ENCODEC_BANDWIDTH_ID, SAMPLE_RATE, inputs, time_call

from vocos_core import Vocos
from vocos_core.testing import checkpoint_config, random_model

SHARED_ENCODEC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "encodec_24khz-random.th"
# Audio seconds each case produces: 10 s per item, except the unequal batch (items of 5..10 s).
UNEQUAL_SECONDS = [5 + i % 6 for i in range(8)]
AUDIO_SECONDS = {"unequal": float(sum(UNEQUAL_SECONDS)), "batch 8": 80.0}


def write_official_size(directory: Path, kind: str) -> Path:
    dim, inter = (512, 1536) if kind == "mel" else (384, 1152)
    config = checkpoint_config(kind, dim=dim, num_layers=8)  # type: ignore[arg-type]
    config["backbone"]["init_args"]["intermediate_dim"] = inter
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    torch.save(random_model(config).state_dict(), directory / "pytorch_model.bin")
    return directory


def audio_seconds(case: str) -> float:
    return next((s for key, s in AUDIO_SECONDS.items() if key in case), 10.0)


def our_cases(mel: Vocos, enc: Vocos, device: str, dtype: torch.dtype, with_encoder: bool) -> dict:
    x = {k: v.to(device) for k, v in inputs().items()}
    mel_b1, mel_b8 = x["mel_b1"].to(dtype), x["mel_b8"].to(dtype)
    bw = torch.tensor([ENCODEC_BANDWIDTH_ID], device=device)
    cases = {
        "mel decode 10 s, batch 1": lambda: mel.decode(mel_b1),
        "mel decode 10 s, batch 8": lambda: mel.decode(mel_b8),
        "encodec decode 10 s (6 kbps), batch 1": lambda: enc.decode(enc.codes_to_features(x["codes_b1"]),
                                                                   bandwidth_id=bw),
        "mel decode_batch 8 x 5-10 s (unequal), batch 8": lambda: mel.decode_batch(
            [m[:, : m.shape[-1] * s // 10] for s, m in zip(UNEQUAL_SECONDS, mel_b8, strict=True)]),
    }
    if with_encoder:
        cases["encodec resynthesis 10 s (6 kbps)"] = lambda: enc(x["audio_10s"], bandwidth_id=bw)
    return cases


def run_ours(mel: Vocos, enc: Vocos, args: argparse.Namespace, dtype: torch.dtype) -> dict[str, float]:
    cases = our_cases(mel, enc, args.device, dtype, with_encoder=dtype == torch.float32)
    return {name: time_call(fn, args.repeats, args.device) for name, fn in cases.items()}


def run_reference(args: argparse.Namespace, mel_dir: Path, enc_dir: Path, torch_home: Path) -> dict[str, float]:
    env = dict(os.environ, TORCH_HOME=str(torch_home), PYTHONPATH=str(Path(__file__).parent))
    out = subprocess.run([args.reference_python, str(Path(__file__).parent / "bench_reference.py"),
                          str(mel_dir), str(enc_dir), str(args.repeats)],
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def half_precision_error(mel: Vocos, dtype: torch.dtype, device: str) -> float:
    """Relative error (max abs diff / max abs) of a 10 s decode in ``dtype`` against float32."""
    x = inputs()["mel_b1"].to(device)
    ref = mel.float().decode(x)
    out = mel.to(dtype).decode(x.to(dtype)).float()
    mel.float()
    return float((out - ref).abs().max() / ref.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reference-python", help="python of a venv with vocos==0.1.0 (CPU comparison)")
    parser.add_argument("--encodec-weights", type=Path, default=SHARED_ENCODEC if SHARED_ENCODEC.exists() else None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vocos-bench-"))
    try:
        mel_dir, enc_dir = write_official_size(tmp / "mel", "mel"), write_official_size(tmp / "enc", "encodec")
        weights = args.encodec_weights
        if weights is None:
            from vocos_core.encodec.testing import write_random_encodec_weights
            weights = write_random_encodec_weights(tmp / "encodec.th")
        torch_home = tmp / "torch"
        (torch_home / "hub" / "checkpoints").mkdir(parents=True)
        shutil.copy(weights, torch_home / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th")
        mel = Vocos.from_pretrained(mel_dir).to(args.device)
        enc = Vocos.from_pretrained(enc_dir, encodec_weights=weights).to(args.device)
        report(args, mel, enc, mel_dir, enc_dir, torch_home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, mel: Vocos, enc: Vocos, mel_dir: Path, enc_dir: Path, torch_home: Path) -> None:
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"repeats {args.repeats}, rounds {args.rounds}")
    for name in args.dtypes:
        dtype = getattr(torch, name)
        ours: dict[str, float] = {}
        ref: dict[str, float] = {}
        for _ in range(args.rounds):
            for case, t in run_ours(mel.to(dtype), enc.to(dtype), args, dtype).items():
                ours[case] = min(t, ours.get(case, float("inf")))
            if args.reference_python and dtype == torch.float32:
                for case, t in run_reference(args, mel_dir, enc_dir, torch_home).items():
                    ref[case] = min(t, ref.get(case, float("inf")))
        mel.float(), enc.float()
        print(f"\n{name}:")
        print(f"{'case':50s} {'ours s':>8s} {'RTF':>8s} {'x real-time':>12s} {'ref s':>8s} {'speed-up':>9s}")
        for case, t in ours.items():
            line = f"{case:50s} {t:8.4f} {t / audio_seconds(case):8.4f} {audio_seconds(case) / t:12.1f}"
            if case in ref:
                line += f" {ref[case]:8.4f} {ref[case] / t:8.2f}x"
            print(line)
        if dtype != torch.float32:
            err = half_precision_error(mel, dtype, args.device)
            print(f"relative error against float32 (mel decode 10 s): {err:.2e}")
    print(f"\n(audio: {SAMPLE_RATE} Hz; speed-up = reference time / our time on the same inputs and weights)")


if __name__ == "__main__":
    main()
