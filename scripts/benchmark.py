"""Real-time factor of vocos_core, and its throughput against the reference implementation and
against ONNX Runtime running the exported reference.

    python3 scripts/benchmark.py                                  # ours, CPU
    python3 scripts/benchmark.py --reference-python REFVENV/bin/python   # side by side, CPU
    python3 scripts/benchmark.py --device cuda --dtypes float32 bfloat16 float16   # GPU

On CPU, float32 is timed once per matmul way that can run here (vocos_core.matmul_ways: mkl,
onednn, bf16x3), each with its error against mkl (plain float32 matmuls), and the achieved GFLOP/s
of the matmuls against the CPU's peak (scripts/cpu_peak.py says how the peak is derived).

Models are random-weight checkpoints of the official sizes (mel: dim 512, 8 layers; EnCodec: dim
384, 8 layers), so timings are those of the real models. The reference runs as a worker process in
its own venv, which also runs the reference exported to ONNX in ONNX Runtime (as many intra-op
threads as torch has: 2 on the 2-core machines; scripts/bench_reference.py). In each round every
case is timed on every side back to back (the side going first rotates), and a round's time is the
median (``--statistic min``: the fastest) of ``--repeats`` calls. Times are medians over rounds; a
speed-up is the median over rounds of the per-round ratio. RTF = compute time / audio time.
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
from bench_cases import ENCODEC_BANDWIDTH_ID, SAMPLE_RATE, STATISTICS, inputs, time_call
from cpu_peak import Peak, cpu_peak

from service.runtime.memory import bound_memory_growth
from vocos_core import Vocos, matmul_ways
from vocos_core.modules import probe_layers
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
            matmul_ways.linear(matmul_ways.linear(h, pwconv1), pwconv2)  # as the current way runs them
        matmul_ways.linear(h, mel.head.out)
    return run


def floor_flop(mel: Vocos, frames: int) -> int:
    """Floating-point operations of :func:`matmuls_alone` (2 per multiply-add)."""
    layers = [lin for b in mel.backbone.convnext for lin in (b.pwconv1, b.pwconv2)]  # type: ignore[union-attr]
    return sum(2 * frames * lin.in_features * lin.out_features for lin in [*layers, mel.head.out])


class ReferenceWorker:
    """The reference implementation in its own venv (scripts/bench_reference.py), timing on request;
    ``onnx_missing`` says why it has no ONNX Runtime column, None when it has one."""

    def __init__(self, python: str, mel_dir: Path, enc_dir: Path, torch_home: Path) -> None:
        env = dict(os.environ, TORCH_HOME=str(torch_home), PYTHONPATH=str(Path(__file__).parent))
        self.proc = subprocess.Popen([python, str(Path(__file__).parent / "bench_reference.py"),
                                      str(mel_dir), str(enc_dir)],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        word, _, rest = self.stdout.readline().strip().partition(" ")
        if word != "ready":
            raise RuntimeError("the reference worker did not start; see its stderr above")
        self.onnx_missing: str | None = json.loads(rest) if rest else "the worker has no ONNX Runtime cases"

    def time(self, case: str, repeats: int, statistic: str = "median") -> float:
        return self._ask(f"{case}\t{repeats}\t{statistic}")

    def onnx_error(self, case: str) -> float:
        """max |ONNX Runtime - reference| / max |reference| on ``case``."""
        return self._ask(f"error\t{case}")

    def _ask(self, line: str) -> float:
        self.stdin.write(line + "\n")
        self.stdin.flush()
        return float(json.loads(self.stdout.readline()))

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=60)


def set_matmuls(way: str, models: list[Vocos]) -> str:
    """Set ``way`` (a matmul way, or ``auto``: the plan the server's probe picks on ``models``); its label."""
    if way != "auto":
        matmul_ways.set_way(way)  # type: ignore[arg-type]
        return way
    plan, _ = matmul_ways.resolve("auto", [layer for model in models for layer in probe_layers(model)])
    matmul_ways.set_plan(plan)
    return f"auto ({plan.name})"


def matmul_error(mel: Vocos, dtype: torch.dtype, device: str, plan: matmul_ways.Plan) -> float:
    """Relative error (max abs diff / max abs) of a 10 s decode in ``dtype`` with ``plan``'s matmuls
    against float32 with mkl (plain float32) matmuls."""
    x = inputs()["mel_b1"].to(device)
    matmul_ways.set_way("mkl")
    ref = mel.float().decode(x)
    matmul_ways.set_plan(plan)
    out = mel.to(dtype).decode(x.to(dtype)).float()
    mel.float()
    return float((out - ref).abs().max() / ref.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--statistic", choices=list(STATISTICS), default="median",
                        help="a round's time from its repeats: median, or min (least disturbed; shared machines)")
    parser.add_argument("--cpu-matmuls", nargs="+", choices=[*matmul_ways.WAYS, "auto"],
                        default=[*matmul_ways.WAYS, "auto"],
                        help="matmul ways timed for float32 on CPU (those that can run here); auto: the plan the "
                        "server's start-up probe picks (one way per row count)")
    parser.add_argument("--reference-python", help="python of a venv with vocos==0.1.0 (and onnxruntime for "
                        "the ONNX Runtime column): CPU comparison")
    parser.add_argument("--encodec-weights", type=Path, default=SHARED_ENCODEC if SHARED_ENCODEC.exists() else None)
    parser.add_argument("--ghz", type=float, help="clock for the CPU peak (default: lscpu's; see cpu_peak.py)")
    parser.add_argument("--flop-per-cycle", type=int, help="float32 FLOP/cycle/core for the peak (default: "
                        "from the CPU's vendor, family and flags)")
    parser.add_argument("--memory", choices=["server", "glibc"], default="server",
                        help="this process's allocator settings: the server's (service.runtime.memory: glibc's mmap "
                        "and trim thresholds fixed, oneDNN's kernel cache capped), or glibc's defaults")
    args = parser.parse_args()
    if args.memory == "server":  # before any tensor: the thresholds govern every later block
        bound_memory_growth()
    if (missing := device_missing(args.device)) is not None:
        raise SystemExit(f"benchmark.py: {missing}")
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


def device_missing(device: str) -> str | None:
    """What ``--device`` needs that this torch lacks (torch's own answer is an AssertionError traceback);
    None if nothing."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return (f"--device {device} needs a CUDA build of torch and a visible NVIDIA GPU; torch {torch.__version__} "
                f"{'has no CUDA support' if torch.version.cuda is None else 'sees no GPU'}")
    return None


def report(args: argparse.Namespace, mel: Vocos, enc: Vocos, mel_dir: Path, enc_dir: Path, torch_home: Path) -> None:
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"repeats {args.repeats} ({args.statistic}), rounds {args.rounds}, memory settings {args.memory}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    worker = (ReferenceWorker(args.reference_python, mel_dir, enc_dir, torch_home)
              if args.reference_python else None)
    if worker is not None and worker.onnx_missing is not None:
        print(f"ONNX Runtime not timed: {worker.onnx_missing}")
    peak = cpu_peak(torch.get_num_threads(), args.ghz, args.flop_per_cycle) if args.device == "cpu" else None
    try:
        for name in args.dtypes:
            dtype = getattr(torch, name)
            for way in cpu_matmuls(args, dtype):
                label = set_matmuls(way, [mel, enc])
                plan = matmul_ways.current_plan()
                sides = time_rounds(args, mel.to(dtype), enc.to(dtype), dtype,
                                    worker if dtype == torch.float32 else None)
                mel.float(), enc.float()
                print_table(name if args.device != "cpu" else f"{name}, {label} matmuls", sides)
                if dtype != torch.float32 or plan.ways != ("mkl",):
                    print(f"relative error against float32 mkl matmuls (mel decode 10 s): "
                          f"{matmul_error(mel, dtype, args.device, plan):.2e}")
                if peak is not None:
                    print_gflops(sides["ours"][FLOOR_CASE], floor_flop(mel, inputs()["mel_b1"].shape[-1]), peak,
                                 name)
                matmul_ways.set_way("mkl")
        if worker is not None and worker.onnx_missing is None:
            errors = ", ".join(f"{case} {worker.onnx_error(case):.1e}" for case in REFERENCE_CASES)
            print(f"\nONNX Runtime's relative error against the reference: {errors} (resynthesis: the encoder's "
                  "latents; their codes, then the audio, flip where a latent is near a codebook boundary)")
    finally:
        if worker is not None:
            worker.close()
    print(f"\n(audio: {SAMPLE_RATE} Hz; times are medians over rounds; a speed-up is the median over rounds of "
          "the other side's time / our time, each round timing every side back to back on the same inputs and "
          "weights)")


def print_gflops(times: list[float], flop: int, peak: Peak, dtype: str = "float32") -> None:
    """The achieved GFLOP/s of the floor case (median and best round); against the CPU's peak for float32
    only, as the peak is float32's (bf16 and float16 run on other units, at other rates)."""
    gflops, best = flop / statistics.median(times) / 1e9, flop / min(times) / 1e9
    share = (f"{100 * gflops / peak.gflops:.0f} % of the float32 peak, {peak.describe()}" if dtype == "float32"
             else f"{dtype} (the float32 peak, {peak.gflops:.0f} GFLOP/s, does not apply)")
    print(f"matmuls alone: {gflops:.0f} GFLOP/s (best round {best:.0f}), {share}")


def cpu_matmuls(args: argparse.Namespace, dtype: torch.dtype) -> list[str]:
    """The matmul ways (or ``auto``) to time for ``dtype``: every requested one that runs, for float32
    on CPU; else PyTorch's own (``mkl``, what runs there)."""
    if dtype != torch.float32 or args.device != "cpu":
        return ["mkl"]
    runs = [w for w in args.cpu_matmuls if w == "auto" or matmul_ways.unsupported_reason(w) is None]
    for way in set(args.cpu_matmuls) - set(runs):
        print(f"{way} matmuls not timed: {matmul_ways.unsupported_reason(way)}")
    return runs


SIDES = ("ours", "reference", "onnxruntime")


def time_rounds(args: argparse.Namespace, mel: Vocos, enc: Vocos, dtype: torch.dtype,
                worker: ReferenceWorker | None) -> dict[str, dict[str, list[float]]]:
    """Per side (:data:`SIDES`) and case, ``rounds`` timings, taken back to back for each case;
    the reference's sides have its cases (:data:`REFERENCE_CASES`) only.

    Which side goes first rotates between rounds, so a drift in machine load favours none.
    """
    cases = our_cases(mel, enc, args.device, dtype, with_encoder=dtype == torch.float32)
    sides: dict[str, dict[str, list[float]]] = {side: {} for side in SIDES}
    others = [] if worker is None else ["reference"] + (["onnxruntime"] if worker.onnx_missing is None else [])
    order = ["ours", *others]
    for i in range(args.rounds):
        for case, fn in cases.items():
            for side in order[i % len(order):] + order[: i % len(order)]:
                if side == "ours":
                    sides["ours"].setdefault(case, []).append(time_call(fn, args.repeats, args.device, args.statistic))
                elif worker is not None and case in REFERENCE_CASES:
                    name = case if side == "reference" else ONNX_PREFIX + case
                    sides[side].setdefault(case, []).append(worker.time(name, args.repeats, args.statistic))
    return sides


# How bench_reference.py names the ONNX Runtime cases: the reference's, prefixed.
ONNX_PREFIX = "onnxruntime: "


def print_table(name: str, sides: dict[str, dict[str, list[float]]]) -> None:
    """Our times, and a column group per other side that has any (none without --reference-python)."""
    others = [side for side in ("reference", "onnxruntime") if sides.get(side)]
    heads = {"reference": ("ref s", "vs ref"), "onnxruntime": ("ORT s", "vs ORT")}
    print(f"\n{name}:")
    print(f"{'case':50s} {'ours s':>8s} {'RTF':>7s} {'x real-time':>11s}"
          + "".join(f" {heads[side][0]:>7s} {heads[side][1]:>7s} {'min..max':>10s}" for side in others))
    for case, times in sides["ours"].items():
        t = statistics.median(times)
        line = f"{case:50s} {t:8.4f} {t / audio_seconds(case):7.4f} {audio_seconds(case) / t:11.1f}"
        for side in others:
            if case in sides[side]:
                other = sides[side][case]
                ratios = [r / o for r, o in zip(other, times, strict=True)]
                line += (f" {statistics.median(other):7.4f} {statistics.median(ratios):6.2f}x "
                         f"{min(ratios):4.2f}..{max(ratios):.2f}")
        print(line)

if __name__ == "__main__":
    main()
