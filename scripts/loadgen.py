#!/usr/bin/env python3
"""Load generator: vocos-serve throughput and latency against the raw model, batched and unbatched.

Starts the server (``python -m service``) on a random loopback port twice -- with ``--max-batch-size``
as given and with 1 -- drives each with N concurrent clients posting ``.npy`` mel spectrograms for a
fixed time, then measures the raw model (``decode_batch`` in-process, no HTTP) on the same inputs at
the batch size the server actually formed. Prints throughput in audio-seconds per second, latency
percentiles, mean batch size, and the server / raw ratio (serving overhead).

    python scripts/loadgen.py                          # random official-size mel model, CPU, 16 clients
    python scripts/loadgen.py --model /path/to/vocos-mel-24khz --device cuda --clients 64
    python scripts/loadgen.py --cpu-matmul mkl                # plain float32 matmuls on both sides

Both sides get the same settings: the flags. The shell's ``VOCOS_*`` variables are dropped (the server is
started without them, so letting them reach the raw model alone would make the two sides differ), and
each side's matmul plan is printed. The random model is removed at the end; the server logs are kept.

Not a test: figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from service.testing import ServerProcess, npy_bytes, sigterm_exits  # noqa: E402
from vocos_core.matmul_ways import CpuMatmul  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="mel checkpoint directory (default: write a random one, see --random-*)")
    p.add_argument("--random-dim", type=int, default=512, help="backbone dim of the random model (official: 512)")
    p.add_argument("--random-layers", type=int, default=8, help="backbone layers of the random model (official: 8)")
    p.add_argument("--device", default="cpu", help="server and raw-model device: cpu | cuda | cuda:N | auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--cpu-matmul", default="auto", choices=list(get_args(CpuMatmul)),
                   help="float32 matmuls on CPU, server and raw model alike (the server's --cpu-matmul)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of timed load per server run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load before each run")
    p.add_argument("--max-batch-size", type=int, default=16, help="batch size of the batched run")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--bucket-ratio", type=float, help="server length bucketing (default: the server's)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="shortest request (audio seconds)")
    p.add_argument("--max-seconds", type=float, default=4.0, help="longest request (audio seconds)")
    p.add_argument("--inputs", type=int, default=64, help="distinct mel inputs, cycled through")
    p.add_argument("--slice", type=float, default=5.0, help="seconds of load between two raw-model measurements")
    p.add_argument("--raw-fraction", type=float, default=0.5,
                   help="raw-model time per slice, as a fraction of the slice (split over the two batch sizes)")
    p.add_argument("--format", default="wav16", choices=["wav16", "wav32f", "flac"], help="response format")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# -- inputs and the raw model --------------------------------------------------------------------------


def make_inputs(count: int, min_s: float, max_s: float, seed: int) -> list[np.ndarray]:
    """Log-mel-like arrays ``(100, T)`` lasting between min_s and max_s seconds at hop 256 / 24 kHz."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(int(min_s * 24000 / 256) + 1, int(max_s * 24000 / 256) + 2, count)
    return [(rng.standard_normal((100, int(t))) - 4.0).astype(np.float32) for t in frames]


class RawModel:
    """The model in this process, without HTTP, run in a worker thread as the server runs it.

    (On some hosts OpenMP called from the main thread is far slower under CPU contention, which
    would flatter the server.)
    """

    def __init__(self, model_dir: Path, inputs: list[np.ndarray], args: argparse.Namespace) -> None:
        import torch

        from service.runtime.models import load_models
        from service.settings import Settings

        settings = Settings(mel_model=str(model_dir), encodec_model="none", device=args.device, dtype=args.dtype,
                            cpu_matmul=args.cpu_matmul)
        self.served = load_models(settings)["mel"]
        # Sorted by length, so a batch of the raw model pays the least padding a batch of its size can.
        self.tensors = sorted((torch.from_numpy(x) for x in inputs), key=lambda t: t.shape[-1])
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.next_group = 0

    def run(self, batch_size: int, seconds: float) -> tuple[float, float]:
        """Decode groups of ``batch_size`` for about ``seconds``; returns (audio seconds, elapsed seconds)."""
        return self.pool.submit(self._run, batch_size, seconds).result()

    def _run(self, batch_size: int, seconds: float) -> tuple[float, float]:
        groups = [self.tensors[i : i + batch_size] for i in range(0, len(self.tensors), batch_size)]
        self.served.decode_batch(groups[0])  # warm-up of this batch shape
        audio = 0.0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            group = groups[self.next_group % len(groups)]
            self.next_group += 1
            outputs = self.served.decode_batch(group)
            audio += sum(o.numel() for o in outputs) / self.served.sample_rate
        return audio, time.perf_counter() - start


# -- the server ------------------------------------------------------------------------------------------


class LoadServer(ServerProcess):
    """The server under load: the mel model alone, with ``batch_size`` and the run's batching options."""

    def __init__(self, model_dir: Path, batch_size: int, args: argparse.Namespace, log_path: Path) -> None:
        flags = [
            "--mel-model", str(model_dir), "--encodec-model", "none", "--device", args.device,
            "--dtype", args.dtype, "--cpu-matmul", args.cpu_matmul, "--max-batch-size", str(batch_size),
            "--max-wait-ms", str(args.max_wait_ms),
            "--max-queue-size", str(max(256, 4 * args.clients)), "--log-level", "warning",
        ]  # fmt: skip
        if args.bucket_ratio is not None:
            flags += ["--bucket-ratio", str(args.bucket_ratio)]
        super().__init__(flags, log_path)

    def cpu_matmul(self) -> str | None:
        """The server's plan for its float32 CPU matmuls (None: none, on a GPU or another dtype)."""
        models = httpx.get(f"{self.url}/models", timeout=10).json()["models"]
        return next(m["cpu_matmul"] for m in models if m["name"] == "mel")

    def batch_counters(self) -> tuple[float, float]:
        """(sum, count) of the mel batch-size histogram."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text

        def value(name: str) -> float:
            match = re.search(rf'^{name}{{model="mel"}} (\S+)$', text, re.MULTILINE)
            return float(match.group(1)) if match else 0.0

        return value("vocos_batch_size_sum"), value("vocos_batch_size_count")

    def stop(self) -> None:
        self.terminate(timeout=30)


# -- clients ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    batch_size: int
    audio_seconds: float
    wall: float
    latencies: list[float]
    errors: Counter[int]  # non-200 responses by status code
    mean_batch: float
    raw_same: float  # raw audio-s/s at the server's mean batch size
    raw_one: float  # raw audio-s/s one request at a time
    client_cores: float  # CPU the clients (this process) used while loading the server, in cores

    @property
    def throughput(self) -> float:
        return self.audio_seconds / self.wall

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")


async def drive(url: str, bodies: list[bytes], clients: int, seconds: float, fmt: str
                ) -> tuple[float, float, list[float], Counter[int]]:
    """N clients post bodies (cycled) for ``seconds``; returns (audio s, wall s, latencies, non-200 statuses)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    next_index = 0
    audio = 0.0
    errors: Counter[int] = Counter()
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index, audio, errors
        while time.perf_counter() < stop_at:
            body = bodies[next_index % len(bodies)]
            next_index += 1
            start = time.perf_counter()
            response = await http.post(f"/decode/mel?format={fmt}", content=body,
                                       headers={"content-type": "application/x-npy"})
            if response.status_code != 200:
                errors[response.status_code] += 1
                continue
            latencies.append(time.perf_counter() - start)
            audio += float(response.headers["x-audio-duration"])

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    return audio, wall, latencies, errors


def run_server(model_dir: Path, batch_size: int, bodies: list[bytes], raw: RawModel, args: argparse.Namespace,
               workdir: Path) -> RunResult:
    """Load the server in slices, each followed by a raw-model slice, so both see the same background load."""
    server = LoadServer(model_dir, batch_size, args, workdir / f"server-bs{batch_size}.log")
    totals = {"audio": 0.0, "wall": 0.0, "same_audio": 0.0, "same_wall": 0.0, "one_audio": 0.0, "one_wall": 0.0,
              "client_cpu": 0.0}
    all_errors: Counter[int] = Counter()
    latencies: list[float] = []
    try:
        server.wait_ready()
        print(f"server max_batch_size={batch_size}: matmuls {server.cpu_matmul() or 'none'} | raw model: matmuls "
              f"{raw.served.cpu_matmul or 'none'}", flush=True)
        asyncio.run(drive(server.url, bodies, args.clients, args.warmup, args.format))
        sum0, count0 = server.batch_counters()
        slices = max(1, math.ceil(args.duration / args.slice))
        for _ in range(slices):
            # The clients share the server's machine: their CPU time tells how much of it they took.
            cpu_start = time.process_time()
            audio, wall, lat, errors = asyncio.run(
                drive(server.url, bodies, args.clients, args.duration / slices, args.format))
            totals["client_cpu"] += time.process_time() - cpu_start
            totals["audio"] += audio
            totals["wall"] += wall
            all_errors += errors
            latencies += lat
            batch_sum, batch_count = server.batch_counters()
            mean_batch = (batch_sum - sum0) / max(1.0, batch_count - count0)
            sizes = {"same": max(1, round(mean_batch)), "one": 1}
            if sizes["same"] == 1:  # one measurement serves both
                raw_audio, raw_wall = raw.run(1, args.raw_fraction * wall)
                for key in sizes:
                    totals[f"{key}_audio"] += raw_audio
                    totals[f"{key}_wall"] += raw_wall
                continue
            for key, size in sizes.items():
                raw_audio, raw_wall = raw.run(size, args.raw_fraction * wall / 2)
                totals[f"{key}_audio"] += raw_audio
                totals[f"{key}_wall"] += raw_wall
    finally:
        server.stop()
    return RunResult(
        f"server max_batch_size={batch_size}", batch_size, totals["audio"], totals["wall"], latencies,
        all_errors, mean_batch, totals["same_audio"] / totals["same_wall"],
        totals["one_audio"] / totals["one_wall"], totals["client_cpu"] / totals["wall"],
    )


# -- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with sigterm_exits(), tempfile.TemporaryDirectory(prefix="vocos-loadgen-model-") as tmp:
        return run(args, Path(args.model) if args.model else write_random(Path(tmp), args))


def drop_vocos_env() -> None:
    """Drop the shell's VOCOS_* variables: the server never sees them (``clean_env``), and the raw model's
    ``Settings`` would read them, so the two sides would run differently without a word."""
    dropped = sorted(k for k in os.environ if k.startswith("VOCOS_"))
    for key in dropped:
        del os.environ[key]
    if dropped:
        print(f"ignored (neither side gets them; use the flags): {', '.join(dropped)}")


def run(args: argparse.Namespace, model_dir: Path) -> int:
    drop_vocos_env()
    logs = Path(tempfile.mkdtemp(prefix="vocos-loadgen-logs-"))
    inputs = make_inputs(args.inputs, args.min_seconds, args.max_seconds, args.seed)
    bodies = [npy_bytes(x) for x in inputs]
    print(f"model {model_dir} | device {args.device} {args.dtype}, cpu_matmul {args.cpu_matmul} | {args.clients} "
          f"clients | {args.inputs} inputs of {args.min_seconds:g}-{args.max_seconds:g} s | {args.duration:g} s per "
          f"run | load average {os.getloadavg()[0]:.2f} | server logs in {logs}", flush=True)
    raw = RawModel(model_dir, inputs, args)
    runs = [run_server(model_dir, bs, bodies, raw, args, logs) for bs in dict.fromkeys([args.max_batch_size, 1])]
    print_runs(runs)
    print("\nraw = decode_batch in this process on the same inputs (grouped by length), in slices between the "
          "load slices: at the server's mean batch size (same-bs) and one at a time; best = the faster; "
          f"client cores = CPU the clients used while loading the server, of {os.cpu_count()} cores. "
          f"load average {os.getloadavg()[0]:.2f}; server logs in {logs}")
    return 0


def print_runs(runs: list[RunResult]) -> None:
    print(f"\n{'run':<28}{'audio-s/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean batch':>11}"
          f"{'requests':>9}{'errors':>7}{'raw same-bs':>12}{'raw bs=1':>9}{'server/raw best':>16}{'client cores':>13}")
    for run in runs:
        best = max(run.raw_same, run.raw_one)
        print(f"{run.label:<28}{run.throughput:>10.1f}{run.percentile(50):>9.1f}{run.percentile(95):>9.1f}"
              f"{run.percentile(99):>9.1f}{run.mean_batch:>11.2f}{len(run.latencies):>9d}{run.errors.total():>7d}"
              f"{run.raw_same:>12.1f}{run.raw_one:>9.1f}{run.throughput / best:>16.2f}{run.client_cores:>13.2f}")
        if run.errors:
            print(f"  {run.label}: non-200 statuses {dict(sorted(run.errors.items()))}")


def write_random(workdir: Path, args: argparse.Namespace) -> Path:
    from vocos_core.testing import write_random_checkpoint

    return write_random_checkpoint(workdir / "model", "mel", dim=args.random_dim, num_layers=args.random_layers)


if __name__ == "__main__":
    sys.exit(main())
