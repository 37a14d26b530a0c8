"""Real-time factor of vocos_core, and its throughput against the reference implementation.

    python3 scripts/benchmark.py                                  # ours, CPU
    python3 scripts/benchmark.py --reference-python REFVENV/bin/python   # side by side, CPU
    python3 scripts/benchmark.py --device cuda --dtypes float32 bfloat16 float16   # GPU

On CPU, float32 is timed twice: with float32 matmuls, and with bf16x3 matmuls (vocos_core.bf16x3,
what the service runs by default there), each with its error against float32 matmuls.

Models are random-weight checkpoints of the official sizes (mel: dim 512, 8 layers; EnCodec: dim
384, 8 layers), so timings are those of the real models. The reference runs as a worker process in
its own venv; in each round every case is timed on both sides back to back (the side going first
alternates), and a round's time is the median of ``--repeats`` calls. Times are medians over rounds;
the speed-up is the median over rounds of the per-round ratio. RTF = compute time / audio time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cases import ENCODEC_BANDWIDTH_ID, SAMPLE_RATE, inputs, time_call

from vocos_core import Vocos, bf16x3
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


# The cases bench_reference.py can time (the reference has no exact batching of unequal lengths).
REFERENCE_CASES = ("mel decode 10 s, batch 1", "mel decode 10 s, batch 8", "encodec decode 10 s (6 kbps), batch 1",
                   "encodec resynthesis 10 s (6 kbps)")


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
    cases[FLOOR_CASE] = matmuls_alone(mel, mel_b1.shape[-1])
    return cases


# The part of a decode that no implementation of the same float maths can skip: the linear layers
# (2 per ConvNeXt block + the head's), on the shapes of "mel decode 10 s, batch 1".
FLOOR_CASE = "(floor) matmuls alone of mel 10 s, batch 1"


def matmuls_alone(mel: Vocos, frames: int) -> Callable[[], None]:
    """The matmuls of a batch-1 decode of ``frames`` frames, with nothing in between."""
    weight = mel.head.out.weight
    h = torch.randn(frames, weight.shape[1], device=weight.device, dtype=weight.dtype)
    blocks = [(b.pwconv1, b.pwconv2) for b in mel.backbone.convnext]  # type: ignore[union-attr]

    @torch.inference_mode()
    def run() -> None:
        for pwconv1, pwconv2 in blocks:
            bf16x3.linear(bf16x3.linear(h, pwconv1), pwconv2)  # nn.Linear's matmul at "highest" precision
        bf16x3.linear(h, mel.head.out)
    return run


class ReferenceWorker:
    """The reference implementation in its own venv (scripts/bench_reference.py), timing on request."""

    def __init__(self, python: str, mel_dir: Path, enc_dir: Path, torch_home: Path) -> None:
        env = dict(os.environ, TORCH_HOME=str(torch_home), PYTHONPATH=str(Path(__file__).parent))
        self.proc = subprocess.Popen([python, str(Path(__file__).parent / "bench_reference.py"),
                                      str(mel_dir), str(enc_dir)],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        if self.stdout.readline().strip() != "ready":
            raise RuntimeError("the reference worker did not start; see its stderr above")

    def time(self, case: str, repeats: int) -> float:
        self.stdin.write(f"{case}\t{repeats}\n")
        self.stdin.flush()
        return float(json.loads(self.stdout.readline()))

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=60)


def reduced_precision_error(mel: Vocos, dtype: torch.dtype, device: str, cpu_matmul: bf16x3.CpuMatmul) -> float:
    """Relative error (max abs diff / max abs) of a 10 s decode in ``dtype`` with ``cpu_matmul``
    matmuls against float32 with float32 matmuls."""
    x = inputs()["mel_b1"].to(device)
    bf16x3.set_cpu_matmul("float32")
    ref = mel.float().decode(x)
    bf16x3.set_cpu_matmul(cpu_matmul)
    out = mel.to(dtype).decode(x.to(dtype)).float()
    mel.float()
    return float((out - ref).abs().max() / ref.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu-matmuls", nargs="+", choices=list(bf16x3.PRECISION), default=["float32", "bf16x3"],
                        help="float32 matmul algorithms timed on CPU (bf16x3 only where vocos_core.bf16x3 runs)")
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
    worker = (ReferenceWorker(args.reference_python, mel_dir, enc_dir, torch_home)
              if args.reference_python else None)
    try:
        for name in args.dtypes:
            dtype = getattr(torch, name)
            for cpu_matmul in cpu_matmuls(args, dtype):
                bf16x3.set_cpu_matmul(cpu_matmul)
                ours, ref = time_rounds(args, mel.to(dtype), enc.to(dtype), dtype,
                                        worker if dtype == torch.float32 else None)
                mel.float(), enc.float()
                print_table(name if cpu_matmul == "float32" else f"{name}, {cpu_matmul} matmuls", ours, ref)
                if dtype != torch.float32 or cpu_matmul != "float32":
                    err = reduced_precision_error(mel, dtype, args.device, cpu_matmul)
                    print(f"relative error against float32 (mel decode 10 s): {err:.2e}")
                bf16x3.set_cpu_matmul("float32")
    finally:
        if worker is not None:
            worker.close()
    print(f"\n(audio: {SAMPLE_RATE} Hz; times are medians over rounds; speed-up is the median over rounds of "
          "reference time / our time, each round timing both back to back on the same inputs and weights)")


def cpu_matmuls(args: argparse.Namespace, dtype: torch.dtype) -> list[bf16x3.CpuMatmul]:
    """The matmul algorithms to time for ``dtype``: bf16x3 only for float32 on a CPU that runs it."""
    if dtype != torch.float32 or args.device != "cpu":
        return ["float32"]
    reason = bf16x3.unsupported_reason()
    if reason is not None and "bf16x3" in args.cpu_matmuls:
        print(f"bf16x3 matmuls not timed: {reason}")
    return [m for m in args.cpu_matmuls if m == "float32" or reason is None]


def time_rounds(args: argparse.Namespace, mel: Vocos, enc: Vocos, dtype: torch.dtype,
                worker: ReferenceWorker | None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per case, ``rounds`` timings of ours and (with a worker) of the reference, taken in pairs.

    Which side goes first alternates between rounds, so a drift in machine load favours neither.
    """
    cases = our_cases(mel, enc, args.device, dtype, with_encoder=dtype == torch.float32)
    ours: dict[str, list[float]] = {case: [] for case in cases}
    ref: dict[str, list[float]] = {}
    for i in range(args.rounds):
        for case, fn in cases.items():
            for side in ("ours", "reference") if i % 2 == 0 else ("reference", "ours"):
                if side == "ours":
                    ours[case].append(time_call(fn, args.repeats, args.device))
                elif worker is not None and case in REFERENCE_CASES:
                    ref.setdefault(case, []).append(worker.time(case, args.repeats))
    return ours, ref


def print_table(name: str, ours: dict[str, list[float]], ref: dict[str, list[float]]) -> None:
    print(f"\n{name}:")
    print(f"{'case':50s} {'ours s':>8s} {'RTF':>8s} {'x real-time':>12s} {'ref s':>8s} {'speed-up':>9s} "
          f"{'min..max':>12s}")
    for case, times in ours.items():
        t = statistics.median(times)
        line = f"{case:50s} {t:8.4f} {t / audio_seconds(case):8.4f} {audio_seconds(case) / t:12.1f}"
        if case in ref:
            ratios = [r / o for r, o in zip(ref[case], times, strict=True)]
            line += (f" {statistics.median(ref[case]):8.4f} {statistics.median(ratios):8.2f}x "
                     f"{min(ratios):5.2f}..{max(ratios):.2f}")
        print(line)


if __name__ == "__main__":
    main()
