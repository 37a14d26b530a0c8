#!/usr/bin/env python3
"""The batching engine under load without HTTP: what the server could serve if requests cost nothing.

N concurrent clients ``submit`` mel inputs straight to a ``BatchingEngine`` in this process, which
applies the server's process-wide memory settings first (``service.runtime.memory``), as ``vocos-serve``
does. Comparing its throughput with ``scripts/loadgen.py``'s splits the serving overhead into what
batching and the memory settings cost and what HTTP costs.

    python scripts/engine_load.py                                  # official-size random mel model, CPU
    python scripts/engine_load.py --mmap-threshold 4194304         # another glibc mmap threshold

Not a test: figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "scripts"))

# Imported after the path set-up above. service.runtime.memory's settings still apply when main() calls
# them: mallopt governs the allocations that follow it, and oneDNN reads its variable when it
# builds its first kernel, which no import does.
import torch  # noqa: E402
from loadgen import make_inputs  # noqa: E402

from service.engine import BatchingEngine, BatchStats  # noqa: E402
from service.runtime.memory import MMAP_THRESHOLD_BYTES, bound_memory_growth, set_mmap_threshold  # noqa: E402
from service.runtime.models import load_models  # noqa: E402
from service.runtime.registry import model_specs  # noqa: E402
from service.runtime.slot import batch_policy  # noqa: E402
from service.settings import Settings  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="mel checkpoint directory (default: a random official-size one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of timed load")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load first")
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float, default=4.0)
    p.add_argument("--inputs", type=int, default=64, help="distinct mel inputs, cycled through")
    p.add_argument("--mmap-threshold", type=int,
                   help="glibc mmap threshold in bytes (default: the server's, service/runtime/memory.py)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


async def drive(engine: BatchingEngine, inputs: list[torch.Tensor], clients: int, seconds: float,
                sample_rate: int) -> tuple[float, float]:
    """Clients submit inputs (cycled) for ``seconds``; returns (audio seconds, wall seconds)."""
    next_index, audio = 0, 0.0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal next_index, audio
        while time.perf_counter() < stop_at:
            x = inputs[next_index % len(inputs)]
            next_index += 1
            output = await engine.submit(x)  # awaited before the sum is read, or clients' sums race
            audio += output.numel() / sample_rate

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return audio, time.perf_counter() - start


class BatchSizes:
    """Engine observer keeping the size of every batch."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_queue_depth(self, model: str, depth: int) -> None:
        pass

    def on_queue_wait(self, model: str, seconds: float) -> None:
        pass

    def on_batch(self, model: str, stats: BatchStats) -> None:
        self.sizes.append(stats.size)


async def run(args: argparse.Namespace, model_dir: Path) -> None:
    settings = Settings(mel_model=str(model_dir), encodec_model="none", device=args.device)
    served = load_models(settings)["mel"]
    inputs = [torch.from_numpy(x) for x in make_inputs(args.inputs, args.min_seconds, args.max_seconds, args.seed)]
    observer = BatchSizes()
    engine = BatchingEngine("mel", served, batch_policy(model_specs(settings)[0].batching), observer=observer)
    await engine.start()
    try:
        await drive(engine, inputs, args.clients, args.warmup, served.sample_rate)
        observer.sizes.clear()
        audio, wall = await drive(engine, inputs, args.clients, args.duration, served.sample_rate)
    finally:
        await engine.drain(30)
    mean_batch = sum(observer.sizes) / max(1, len(observer.sizes))
    print(f"engine only: {audio / wall:.1f} audio-s/s, mean batch {mean_batch:.2f}, {len(observer.sizes)} batches "
          f"in {wall:.1f} s")


def random_model(directory: Path) -> Path:
    from vocos_core.testing import write_random_checkpoint

    return write_random_checkpoint(directory / "model", "mel", dim=512, num_layers=8)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bound_memory_growth()  # before any model runs, as the server does
    if args.mmap_threshold is not None:
        set_mmap_threshold(args.mmap_threshold)
    threshold = args.mmap_threshold or os.environ.get("MALLOC_MMAP_THRESHOLD_") or MMAP_THRESHOLD_BYTES
    with tempfile.TemporaryDirectory(prefix="vocos-engine-load-") as tmp:  # the 52 MB random model goes at the end
        model_dir = Path(args.model) if args.model else random_model(Path(tmp))
        print(f"model {model_dir} | device {args.device} | {args.clients} clients | {args.inputs} inputs of "
              f"{args.min_seconds:g}-{args.max_seconds:g} s | glibc mmap threshold {threshold} bytes", flush=True)
        asyncio.run(run(args, model_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
