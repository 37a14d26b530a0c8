"""Plot a vocos-train run's curves from its TensorBoard events: training and validation mel L1, PESQ.

    python scripts/plot_training_curves.py LOG_DIR [LOG_DIR ...] OUT.png [--griffin-lim PESQ]

Several log directories are stages of one run (e.g. a fine-tune started with ``--init-from`` the
previous stage's export): they are drawn one after the other, each stage's batches counted on from
where the previous one ended, with a line where a stage begins. ``--griffin-lim`` draws that PESQ
as a reference line.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def series(acc: EventAccumulator, tag: str, offset: int) -> tuple[list[int], list[float]]:
    if tag not in acc.Tags()["scalars"]:
        return [], []
    events = acc.Scalars(tag)
    return [e.step + offset for e in events], [e.value for e in events]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="LOG_DIR [LOG_DIR ...] OUT.png")
    ap.add_argument("--griffin-lim", type=float, help="PESQ of Griffin-Lim on the same held-out set")
    args = ap.parse_args()
    *log_dirs, out = args.paths
    fig, (ax_mel, ax_pesq) = plt.subplots(1, 2, figsize=(11, 3.6))
    offset = 0
    for i, log_dir in enumerate(log_dirs):
        acc = EventAccumulator(log_dir, size_guidance={"scalars": 0}).Reload()
        train, val, pesq = (series(acc, t, offset) for t in ("generator/mel_loss", "val/mel_loss", "val/pesq_score"))
        first = i == 0
        ax_mel.plot(*train, color="C0", alpha=0.6, label="train (batch)" if first else None)
        ax_mel.plot(*val, "o-", color="C1", label="held-out" if first else None)
        ax_pesq.plot(*pesq, "o-", color="C2", label="trained model" if first else None)
        if not first:
            for ax in (ax_mel, ax_pesq):
                ax.axvline(offset, color="grey", linestyle=":", linewidth=1)
        offset = max(train[0][-1] if train[0] else offset, offset)
    if args.griffin_lim is not None:
        ax_pesq.axhline(args.griffin_lim, color="C3", linestyle="--", label="Griffin-Lim, 32 it.")
    for ax, label in ((ax_mel, "log-mel L1"), (ax_pesq, "PESQ wb (held-out)")):
        ax.set_xlabel("batches")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
