"""Two-process DDP on CPU (gloo) through ``vocos-train fit``: both ranks end with the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .training_helpers import tiny_config

# Each test runs Lightning fits (the full-size discriminators): tens of seconds on 2 CPU cores.
pytestmark = pytest.mark.slow


ROOT = Path(__file__).resolve().parents[3]


def test_two_process_ddp_keeps_the_ranks_identical(tmp_path: Path) -> None:
    dump = tmp_path / "ranks"
    config = tiny_config("vocos.yaml", tmp_path, max_steps=4,
                         trainer={"strategy": "ddp_find_unused_parameters_true", "devices": 2,
                                  "num_sanity_val_steps": 0, "limit_val_batches": 0})
    cmd = [sys.executable, "-m", "vocos_core.training.cli", "fit", "--config", str(config),
           "--trainer.callbacks+=vocos_core.training.callbacks.RankWeightsCheck",
           f"--trainer.callbacks.dump_dir={dump}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world_size: 2" in proc.stdout + proc.stderr or "MEMBER: 2/2" in proc.stdout + proc.stderr
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0], ranks[1])
    trained = torch.load(next(tmp_path.glob("logs/**/last.ckpt")), map_location="cpu", weights_only=False)
    assert trained["global_step"] == 4
