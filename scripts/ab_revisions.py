"""Is the working tree faster than a git revision? Both versions of vocos_core, one process, paired rounds.

    python3 scripts/ab_revisions.py REV                      # e.g. HEAD~3, on the default cases
    python3 scripts/ab_revisions.py REV --cases resynthesis  # EnCodec resynthesis only
    python3 scripts/ab_revisions.py REV --cases streams      # 28 mel streams stepped together
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
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cases import ENCODEC_BANDWIDTH_ID, inputs, time_call
from benchmark import SHARED_ENCODEC, UNEQUAL_SECONDS, write_official_size

ROOT = Path(__file__).resolve().parents[1]
CASES = ("mel-b1", "mel-b8", "mel-unequal", "encodec-b1", "resynthesis", "streams")
# The streams case: this many streams of 2 s each, every step a chunk of 5-20 frames per stream (as
# scripts/stream_load.py's simulated TTS sends), all streams stepped in one batched call.
STREAMS, STREAM_SECONDS = 28, 2


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


def cases(module: object, mel_dir: Path, enc_dir: Path, weights: Path | None, names: list[str]) -> dict:
    """The cases ``names`` on ``module``'s models (the streams case is built only when asked for: a
    revision from before ``vocos_core.streaming`` has none)."""
    vocos = module.Vocos  # type: ignore[attr-defined]
    mel = vocos.from_pretrained(mel_dir)
    enc = vocos.from_pretrained(enc_dir, encodec_weights=weights)
    x, bw = inputs(), torch.tensor([ENCODEC_BANDWIDTH_ID])
    unequal = [m[:, : m.shape[-1] * s // 10] for s, m in zip(UNEQUAL_SECONDS, x["mel_b8"], strict=True)]
    all_cases = {
        "mel-b1": lambda: mel.decode(x["mel_b1"]),
        "mel-b8": lambda: mel.decode(x["mel_b8"]),
        "mel-unequal": lambda: mel.decode_batch(unequal),
        "encodec-b1": lambda: enc.decode(enc.codes_to_features(x["codes_b1"]), bandwidth_id=bw),
        "resynthesis": lambda: enc(x["audio_10s"], bandwidth_id=bw),
    }
    if "streams" in names:
        all_cases["streams"] = stream_case(module, mel, x["mel_b8"][0, :, : STREAM_SECONDS * 24000 // 256 + 1])
    return {name: all_cases[name] for name in names}


def has_streams(module: object) -> bool:
    """Whether ``module`` (a revision's ``vocos_core``) has the streaming the streams case steps."""
    try:
        importlib.import_module(f"{module.__name__}.streaming.stream")  # type: ignore[attr-defined]
    except ModuleNotFoundError:
        return False
    return True


def stream_case(module: object, mel: object, frames: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Decode ``frames`` ``(n_mels, T)`` as STREAMS streams at once, each in its own seeded chunks;
    returns every stream's audio end to end."""
    stream = importlib.import_module(f"{module.__name__}.streaming.stream")  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(0)
    cuts = []
    for _ in range(STREAMS):
        sizes = torch.randint(5, 21, (frames.shape[-1] // 5,), generator=gen).cumsum(0)
        cuts.append([0, *[int(c) for c in sizes if c < frames.shape[-1]], frames.shape[-1]])

    def run() -> torch.Tensor:
        states = [stream.StreamState.start(mel) for _ in range(STREAMS)]
        out: list[list[torch.Tensor]] = [[] for _ in range(STREAMS)]
        for step in range(max(len(c) for c in cuts) - 1):
            chunks = [frames[:, c[step]:c[step + 1]] if step + 1 < len(c) else frames[:, :0] for c in cuts]
            final = [step + 2 == len(c) for c in cuts]
            live = [i for i, c in enumerate(cuts) if step + 1 < len(c)]
            pieces = stream.decode_steps(mel, [states[i] for i in live], [chunks[i] for i in live],
                                         [final[i] for i in live])
            for i, piece in zip(live, pieces, strict=True):
                out[i].append(piece)
        return torch.cat([torch.cat(o) for o in out])

    return run


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
        if "streams" in args.cases and not has_streams(old_module):
            print(f"streams: not timed, {args.rev} has no vocos_core.streaming")
            args.cases = [case for case in args.cases if case != "streams"]
            if not args.cases:
                raise SystemExit("ab_revisions: no case left to time")
        mel_dir = write_official_size(tmp_path / "mel", "mel")
        enc_dir = write_official_size(tmp_path / "enc", "encodec")
        weights = SHARED_ENCODEC if SHARED_ENCODEC.exists() else None
        if weights is None:
            from vocos_core.encodec.testing import write_random_encodec_weights
            weights = write_random_encodec_weights(tmp_path / "encodec.th")
        sides = {args.rev: cases(old_module, mel_dir, enc_dir, weights, args.cases),
                 "working tree": cases(vocos_core, mel_dir, enc_dir, weights, args.cases)}
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
