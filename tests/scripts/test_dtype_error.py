"""scripts/dtype_error.py on a tiny random model: one line per half dtype, errors ordered and small."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from scripts_helpers import import_script

from vocos_core.testing import write_random_checkpoint


def test_each_half_dtype_gets_its_error_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    model = write_random_checkpoint(tmp_path / "mel", "mel", dim=32, num_layers=2)
    monkeypatch.setattr(sys, "argv", ["dtype_error.py", str(model)])
    import_script("dtype_error").main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["bfloat16", "float16"]
    for line in lines:
        low, high = (float(x) for x in re.findall(r"peak ([\d.e-]+) to ([\d.e-]+)", line)[0])
        assert 0 < low <= high < 0.5 and line.endswith("over 9 mels")
