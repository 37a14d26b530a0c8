"""Plot a vocos-train run's curves from its TensorBoard events: training and validation mel L1, PESQ.

    python scripts/plot_training_curves.py LOG_DIR OUT.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def series(acc: EventAccumulator, tag: str) -> tuple[list[int], list[float]]:
    if tag not in acc.Tags()["scalars"]:
        return [], []
    events = acc.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def main(log_dir: str, out: str) -> None:
    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0}).Reload()
    fig, (ax_mel, ax_pesq) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax_mel.plot(*series(acc, "generator/mel_loss"), label="train (batch)", alpha=0.6)
    ax_mel.plot(*series(acc, "val/mel_loss"), "o-", label="held-out")
    ax_mel.set_xlabel("batches")
    ax_mel.set_ylabel("log-mel L1")
    ax_mel.legend()
    ax_pesq.plot(*series(acc, "val/pesq_score"), "o-", color="C2")
    ax_pesq.set_xlabel("batches")
    ax_pesq.set_ylabel("PESQ wb (held-out)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
