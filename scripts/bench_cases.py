"""Timing cases shared by scripts/benchmark.py (ours) and scripts/bench_reference.py (reference venv).

Only numpy/torch and the standard library here: this file runs in both environments.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

SAMPLE_RATE = 24000
# 10 s of audio: mel frames at hop 256 (center framing adds one), EnCodec frames at hop 320.
MEL_FRAMES_10S = 10 * SAMPLE_RATE // 256 + 1
ENCODEC_FRAMES_10S = 10 * SAMPLE_RATE // 320
ENCODEC_BANDWIDTH_ID = 2  # 6 kbps, 8 codebooks


# How a round's ``repeats`` calls become its time: the median, or the fastest call (the least disturbed
# by other work on a shared machine).
STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min}


def time_call(fn: Callable[[], object], repeats: int, device: str, statistic: str = "median") -> float:
    """Wall time of ``fn`` over ``repeats`` runs after one warm-up (their ``statistic``), in seconds."""
    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return STATISTICS[statistic](times)


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "mel_b1": torch.randn(1, 100, MEL_FRAMES_10S, generator=gen),
        "mel_b8": torch.randn(8, 100, MEL_FRAMES_10S, generator=gen),
        "codes_b1": torch.randint(0, 1024, (8, 1, ENCODEC_FRAMES_10S), generator=gen),
        "audio_10s": 0.1 * torch.randn(1, 10 * SAMPLE_RATE, generator=gen),
    }
