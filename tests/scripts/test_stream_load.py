"""scripts/stream_load.py: its figures from synthetic stream timelines, and one short run against a real
server with a tiny model and two streams."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from scripts_helpers import SCRIPTS, import_script

stats = import_script("stream_load_stats")


def _stream(sends: list[tuple[float, int]], receives: list[tuple[float, int]]) -> object:
    """A stream at 1000 Hz, hop 10, lookahead 25 samples: frame f's audio is final after frame f + 2.5."""
    result = stats.StreamResult(1000, 25, 10)
    result.sends = sends
    for at, total in receives:
        result.receive(at, np.zeros(total - result.samples, np.float32))
    return result


def test_chunk_latency_is_measured_to_the_audio_the_chunk_made_final() -> None:
    # 5 frames -> 25 samples final; 10 frames -> 75; the end flushes the remaining 25 (100 in all).
    result = _stream([(0.0, 5), (1.0, 10)], [(0.5, 20), (0.6, 25), (1.25, 75), (1.3, 100)])
    assert result.chunk_latencies() == pytest.approx([0.6, 0.25])
    assert result.final_after(2) == 0 and result.final_after(10) == 75


def test_needed_buffer_and_underruns() -> None:
    # 100 samples at 0 s (0.1 s of audio), the next at 0.3 s: the player needed 0.2 s of buffer.
    late = _stream([(0.0, 13), (0.3, 23)], [(0.0, 100), (0.3, 200)])
    on_time = _stream([(0.0, 13), (0.1, 23)], [(0.0, 100), (0.1, 200)])
    assert late.needed_buffer() == pytest.approx(0.2) and on_time.needed_buffer() == pytest.approx(0.0)
    summary = stats.summarise([late, on_time], fps=100.0, buffer_ms=150.0, offline=np.zeros(200, np.float32))
    assert summary.underruns == 1
    assert summary.max_error == 0.0 and summary.lookahead_ms == pytest.approx(25.0)
    assert sorted(summary.needed_buffer) == pytest.approx([0.0, 200.0])


def test_chunks_cover_the_frames_in_the_given_sizes() -> None:
    load = import_script("stream_load")
    sizes = load.chunk_sizes(1001, 5, 20, np.random.default_rng(0))
    assert sum(sizes) == 1001 and all(5 <= s <= 20 for s in sizes[:-1]) and 1 <= sizes[-1] <= 20
    mel = load.mel_input(2.0, 24000, 256, 100, 0)
    assert mel.shape == (100, 189) and mel.dtype == np.float32


def test_a_short_run_prints_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "stream_load.py"), "--random-dim", "32", "--random-layers", "1",
         "--streams", "2", "--seconds", "1.5", "--find-max", "--find-max-streams", "1,2", "--offline-requests", "2",
         "--offline-concurrency", "2", "--stagger", "0.1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    runs = re.findall(r"real time x1, (\d+) streams of 1.5 s .*: underruns (\d+)/\d+", out)
    assert [n for n, _ in runs][:2] == ["2", "1"], out  # the run asked for, then find-max from N = 1
    find_max = runs[1:]
    best = 0 if int(find_max[0][1]) else (1 if len(find_max) == 1 or int(find_max[1][1]) else 2)
    latency = re.search(r"chunk latency beyond the lookahead p50 ([\d.]+) ms, p99 ([\d.]+) ms", out)
    assert latency and 0 < float(latency.group(1)) <= float(latency.group(2)), out
    error = re.search(r"streamed vs offline decode .*: max \|difference\| (\S+)", out)
    assert error and float(error.group(1)) <= 1e-4, out
    assert f"find-max: largest N with no underrun: {best} " in out, out
    rates = re.search(r"throughput: offline ([\d.]+) audio-s/s .* streaming ([\d.]+) audio-s/s .* ratio ([\d.]+)", out)
    assert rates and float(rates.group(1)) > 0 and float(rates.group(2)) > 0, out
