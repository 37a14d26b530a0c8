"""GFLOP/s of each CPU matmul way (vocos_core.matmul_ways) on the official mel model's linear shapes,
at the row counts the start-up probe uses, against the CPU's float32 peak (scripts/cpu_peak.py).

    python3 scripts/matmul_ways.py                 # 2 threads, 5 rounds
    python3 scripts/matmul_ways.py --ghz 3.7 --rounds 9

In each round every way is timed on every (rows, shape) back to back, so load drifts hit all ways
alike; a cell is the best round (the least disturbed), and the ratio column is oneDNN over MKL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_peak import cpu_peak

from vocos_core import matmul_ways

# (in, out) of pwconv1, pwconv2 and the ISTFT head's linear layer of the official mel model; pwconv1 is
# timed with the GELU the model applies to its output, as the start-up probe times it.
SHAPES = ((512, 1536), (1536, 512), (512, 1026))
GELU = {(512, 1536)}
ROWS = (16, 64, 256, 938, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="passes per timing (the fastest counts)")
    parser.add_argument("--ghz", type=float, help="clock for the peak (default: lscpu's)")
    args = parser.parse_args()
    ways = matmul_ways.available()
    peak = cpu_peak(torch.get_num_threads(), args.ghz)
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds}; peak {peak.describe()}")
    for way in set(matmul_ways.WAYS) - set(ways):
        print(f"{way} not timed: {matmul_ways.unsupported_reason(way)}")
    best: dict[tuple[str, int, tuple[int, int]], float] = {}
    layers = {shape: nn.Linear(*shape) for shape in SHAPES}
    for _ in range(args.rounds):
        for rows in ROWS:
            for shape, layer in layers.items():
                for way in ways:
                    t = matmul_ways._probe(way, [(layer, shape in GELU)], rows, args.repeats)
                    key = (way, rows, shape)
                    best[key] = min(best.get(key, float("inf")), t)
    print("(512 x 1536 with its GELU: the GFLOP/s count the matmul's FLOP alone)")
    print(f"\n{'rows':>5} {'K x N':>11} " + " ".join(f"{w + ' GFLOP/s':>16}" for w in ways)
          + (f" {'onednn/mkl':>11}" if {"mkl", "onednn"} <= set(ways) else ""))
    for rows in ROWS:
        for shape in SHAPES:
            flop = 2 * rows * shape[0] * shape[1]
            cells = {w: flop / best[(w, rows, shape)] / 1e9 for w in ways}
            line = f"{rows:>5} {shape[0]:>5} x {shape[1]:<4} " + " ".join(
                f"{cells[w]:>8.0f} ({100 * cells[w] / peak.gflops:3.0f} %)" for w in ways)
            if {"mkl", "onednn"} <= set(ways):
                line += f" {cells['onednn'] / cells['mkl']:>10.2f}x"
            print(line)


if __name__ == "__main__":
    main()
