"""Is the working tree faster than a git revision? Both versions of vocos_core, one process, paired rounds.

    python3 scripts/ab_revisions.py REV                      # e.g. HEAD~3, on the default cases
    python3 scripts/ab_revisions.py REV --cases resynthesis  # EnCodec resynthesis only
    MALLOC_MMAP_THRESHOLD_=8388608 python3 scripts/ab_revisions.py REV   # under the service's glibc setting

REV's ``vocos_core`` is extracted with ``git archive`` under another package name and loaded next to
the working tree's, on the same official-size random checkpoints and inputs as scripts/benchmark.py.
In each round both versions run every case back to back (the one going first alternates); a round's
time is the median of ``--repeats`` calls. Prints each version's median and the median of the
per-round ratios (REV time / working-tree time), and the largest difference between their outputs.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cases import ENCODEC_BANDWIDTH_ID, inputs, time_call
from benchmark import SHARED_ENCODEC, UNEQUAL_SECONDS, write_official_size

ROOT = Path(__file__).resolve().parents[1]
CASES = ("mel-b1", "mel-b8", "mel-unequal", "encodec-b1", "resynthesis")


def load_revision(rev: str, into: Path) -> object:
    """``vocos_core`` as of ``rev``, imported as ``vocos_core_rev`` from ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "vocos_core"], check=True,
                             capture_output=True).stdout
    name = "vocos_core_rev"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "vocos_core").rename(into / name)
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def cases(module: object, mel_dir: Path, enc_dir: Path, weights: Path | None) -> dict:
    vocos = module.Vocos  # type: ignore[attr-defined]
    mel = vocos.from_pretrained(mel_dir)
    enc = vocos.from_pretrained(enc_dir, encodec_weights=weights)
    x, bw = inputs(), torch.tensor([ENCODEC_BANDWIDTH_ID])
    unequal = [m[:, : m.shape[-1] * s // 10] for s, m in zip(UNEQUAL_SECONDS, x["mel_b8"], strict=True)]
    return {
        "mel-b1": lambda: mel.decode(x["mel_b1"]),
        "mel-b8": lambda: mel.decode(x["mel_b8"]),
        "mel-unequal": lambda: mel.decode_batch(unequal),
        "encodec-b1": lambda: enc.decode(enc.codes_to_features(x["codes_b1"]), bandwidth_id=bw),
        "resynthesis": lambda: enc(x["audio_10s"], bandwidth_id=bw),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="git revision to compare the working tree with")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import vocos_core

    with tempfile.TemporaryDirectory(prefix="vocos-ab-") as tmp:
        tmp_path = Path(tmp)
        old_module = load_revision(args.rev, tmp_path / "rev")
        mel_dir = write_official_size(tmp_path / "mel", "mel")
        enc_dir = write_official_size(tmp_path / "enc", "encodec")
        weights = SHARED_ENCODEC if SHARED_ENCODEC.exists() else None
        if weights is None:
            from vocos_core.encodec.testing import write_random_encodec_weights
            weights = write_random_encodec_weights(tmp_path / "encodec.th")
        sides = {args.rev: cases(old_module, mel_dir, enc_dir, weights),
                 "working tree": cases(vocos_core, mel_dir, enc_dir, weights)}
        report(args, sides)


def report(args: argparse.Namespace, sides: dict[str, dict]) -> None:
    old, new = list(sides)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, rounds {args.rounds}, "
          f"repeats {args.repeats}")
    with torch.inference_mode():
        times: dict[tuple[str, str], list[float]] = {}
        for i in range(args.rounds):
            for case in args.cases:
                for side in (old, new) if i % 2 == 0 else (new, old):
                    times.setdefault((case, side), []).append(time_call(sides[side][case], args.repeats, "cpu"))
        for case in args.cases:
            a, b = (torch.cat(out) if isinstance(out, list) else out  # decode_batch gives a list
                    for out in (sides[old][case](), sides[new][case]()))
            diff = float((a - b).abs().max() / a.abs().max())
            ratios = [o / n for o, n in zip(times[(case, old)], times[(case, new)], strict=True)]
            print(f"{case:12s} {old} {statistics.median(times[(case, old)]):.4f} s   {new} "
                  f"{statistics.median(times[(case, new)]):.4f} s   speed-up {statistics.median(ratios):.2f}x "
                  f"({min(ratios):.2f}..{max(ratios):.2f})   max rel. difference {diff:.1e}")


if __name__ == "__main__":
    main()
