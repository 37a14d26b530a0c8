"""scripts/low_latency.py on a tiny random model and a tiny corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scripts_helpers import import_script
from test_eval_vocoder import corpus

from vocos_core.testing import write_random_checkpoint


def test_low_latency_rows_start_exact_and_grow_in_error_as_the_lookahead_shrinks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = import_script("low_latency")
    model = write_random_checkpoint(tmp_path / "model", "mel", dim=16, num_layers=2)  # lookahead 9 frames
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["low_latency.py", str(corpus(tmp_path)), str(model), "--lookahead", "0", "4",
                                      "8", "--json", str(out)])
    script.main()
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["lookahead_frames"] for r in rows] == [9, 0, 4, 8]
    assert all(r["items"] == 4 and 1.0 <= r["pesq_wb"] <= 4.7 for r in rows)
    exact, *low = rows
    assert exact["relative_l2"] < 1e-5 and exact["cost_vs_exact"] == pytest.approx(1.0)
    assert low[0]["relative_l2"] > low[1]["relative_l2"] > low[2]["relative_l2"] > exact["relative_l2"]
    assert low[0]["lookahead_ms"] == pytest.approx(1000 * 512 / 24000, abs=0.1)  # half the 1024 window
    assert "| 0 frames, 21.3 ms |" in capsys.readouterr().out
