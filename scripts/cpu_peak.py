"""The float32 FMA peak of this CPU, for scripts/benchmark.py's achieved-GFLOP/s line.

peak = cores x GHz x float32 FLOP per cycle per core, where FLOP per cycle = FMA units x vector lanes
x 2 (an FMA is a multiply and an add). Read from ``lscpu`` (cores, clock, vendor, family, flags):

- AVX-512: 16 float32 lanes. Intel server cores and AMD Zen 5 (family 26) issue two 512-bit FMAs a
  cycle: 64 FLOP/cycle. AMD Zen 4 (family 25) runs AVX-512 on its two 256-bit FMA units, one 512-bit
  FMA a cycle: 32.
- AVX2 with FMA: two 256-bit FMA units, 8 lanes: 32.

The clock is lscpu's "CPU max MHz" where the hypervisor tells it, else the nominal "cpu MHz"; a CPU
that boosts above it runs faster, so ``--ghz`` overrides it (docs/performance.md says what we used).

    python3 scripts/cpu_peak.py                 # this CPU's peak, all cores, and how it was derived
    python3 scripts/cpu_peak.py --threads 1 --ghz 3.7
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    cores: int
    ghz: float
    flop_per_cycle: int
    model: str

    @property
    def gflops(self) -> float:
        return self.cores * self.ghz * self.flop_per_cycle

    def describe(self) -> str:
        return (f"{self.model}: {self.cores} cores x {self.ghz:.2f} GHz x {self.flop_per_cycle} float32 FLOP/cycle "
                f"= {self.gflops:.0f} GFLOP/s")


def lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def flop_per_cycle(info: dict[str, str]) -> int:
    """float32 FLOP per cycle per core of the widest FMA the flags show (see the module docstring)."""
    flags = set(info.get("Flags", "").split())
    amd = info.get("Vendor ID") == "AuthenticAMD"
    if "avx512f" in flags:
        return 32 if amd and info.get("CPU family") == "25" else 64
    return 32 if "fma" in flags else 16


def clock_ghz(info: dict[str, str]) -> float:
    if info.get("CPU max MHz"):
        return float(info["CPU max MHz"]) / 1000
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"cpu MHz\s*:\s*([\d.]+)", f.read())
    except OSError:
        match = None
    return float(match.group(1)) / 1000 if match else 0.0


def cpu_peak(threads: int, ghz: float | None = None, flop: int | None = None) -> Peak:
    """The peak of ``threads`` cores (the benchmark's thread count), with optional overrides."""
    info = lscpu()
    cores = min(threads, os.cpu_count() or threads)
    return Peak(cores, ghz or clock_ghz(info), flop or flop_per_cycle(info), info.get("Model name", "unknown CPU"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores counted (default: all)")
    p.add_argument("--ghz", type=float, help="clock (default: lscpu's max MHz, else /proc/cpuinfo's)")
    p.add_argument("--flop-per-cycle", type=int, help="float32 FLOP/cycle/core (default: from the flags)")
    args = p.parse_args(argv)
    info = lscpu()
    flags = set(info.get("Flags", "").split())
    widest = "avx512f" if "avx512f" in flags else "fma" if "fma" in flags else "neither avx512f nor fma"
    peak = cpu_peak(args.threads, args.ghz, args.flop_per_cycle)
    print(f"float32 peak {peak.gflops:.0f} GFLOP/s")
    print(f"  {peak.describe()}")
    print(f"  from: vendor {info.get('Vendor ID', '?')}, family {info.get('CPU family', '?')}, widest FMA flag "
          f"{widest}{' (overridden)' if args.flop_per_cycle else ''}; clock "
          f"{'--ghz' if args.ghz else 'lscpu CPU max MHz' if info.get('CPU max MHz') else '/proc/cpuinfo cpu MHz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
