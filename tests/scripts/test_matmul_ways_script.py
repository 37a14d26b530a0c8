"""scripts/matmul_ways.py: one row per row count and shape, a GFLOP/s cell per way that runs here."""

from __future__ import annotations

import sys

import pytest
from scripts_helpers import import_script

from vocos_core import matmul_ways


def test_the_table_has_every_way_row_count_and_shape(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    script = import_script("matmul_ways")
    monkeypatch.setattr(script, "ROWS", (16, 64))
    monkeypatch.setattr(sys, "argv", ["matmul_ways.py", "--rounds", "1", "--repeats", "1", "--ghz", "3"])
    script.main()
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line[:5].strip() in ("16", "64")]
    assert len(rows) == 2 * len(script.SHAPES)
    ways = matmul_ways.available()
    assert all(len([c for c in row if c.endswith("%)")]) == len(ways) for row in rows)
    assert "x 3.00 GHz x" in out  # the peak it measures against
    for way in set(matmul_ways.WAYS) - set(ways):
        assert f"{way} not timed: " in out
