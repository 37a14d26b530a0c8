"""scripts/engine_load.py drives the batching engine without HTTP and counts every client's audio."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scripts_helpers import SCRIPTS, import_script

from vocos_core.testing import write_random_checkpoint


class CountingEngine:
    """Stands in for BatchingEngine: answers every submit after a pause, with 480 samples."""

    def __init__(self) -> None:
        self.calls = 0

    async def submit(self, inputs: torch.Tensor) -> torch.Tensor:
        await asyncio.sleep(0.001)  # clients interleave here, as they do on the real engine
        self.calls += 1
        return torch.zeros(480)


def test_concurrent_clients_audio_is_summed_without_lost_updates() -> None:
    engine_load = import_script("engine_load")
    engine = CountingEngine()
    audio, wall = asyncio.run(engine_load.drive(engine, [torch.zeros(100, 8)], 8, 0.2, 24000))
    assert engine.calls > 8
    assert audio == pytest.approx(engine.calls * 480 / 24000)  # a racy sum keeps about 1 in 8
    assert wall >= 0.2


def test_prints_the_engine_throughput_and_mean_batch(tmp_path: Path) -> None:
    model = write_random_checkpoint(tmp_path / "mel", "mel")
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "engine_load.py"), "--model", str(model), "--clients", "4",
         "--duration", "1", "--warmup", "0.2", "--inputs", "8", "--mmap-threshold", "8388608"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "glibc mmap threshold 8388608 bytes" in result.stdout
    match = re.search(r"engine only: ([\d.]+) audio-s/s, mean batch ([\d.]+), (\d+) batches", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) > 0
    assert 1.0 <= float(match.group(2)) <= 4.0
    assert int(match.group(3)) > 0


def test_the_random_model_is_removed_at_the_end(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    engine_load = import_script("engine_load")
    written: list[Path] = []

    def tiny(directory: Path) -> Path:  # the script's is official-size (52 MB)
        written.append(write_random_checkpoint(directory / "model", "mel"))
        return written[-1]

    monkeypatch.setattr(engine_load, "random_model", tiny)
    monkeypatch.setattr(engine_load, "bound_memory_growth", lambda: None)  # process-wide: not in the test process
    assert engine_load.main(["--clients", "2", "--duration", "0.2", "--warmup", "0.1", "--inputs", "2"]) == 0
    assert written and not written[0].parent.exists()
