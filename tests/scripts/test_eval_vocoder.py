"""scripts/eval_vocoder.py and scripts/phase_by_band.py on a tiny random model and a tiny corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scripts_helpers import import_script

from vocos_core.testing import write_random_checkpoint

VOICES = ("en-gb", "kal_diphone")


def corpus(directory: Path, per_voice: int = 2, seconds: float = 1.5, sr: int = 24000) -> Path:
    """Harmonic 'syllables' (4 per second) named as make_speech_corpus.py names its files."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(per_voice * len(VOICES)):
        f0 = 100 + 15 * i
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
        envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
        path = directory / f"val_{i:04d}_{VOICES[i % len(VOICES)]}.wav"
        sf.write(path, (0.3 * voiced * envelope + 1e-3 * rng.standard_normal(t.size)).astype(np.float32), sr)
        paths.append(str(path))
    filelist = directory / "filelist.val"
    filelist.write_text("\n".join(paths) + "\n", encoding="utf-8")
    return filelist


def test_eval_vocoder_scores_griffin_lim_and_each_model_whole_and_per_voice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = import_script("eval_vocoder")
    model = write_random_checkpoint(tmp_path / "model", "mel", dim=16)
    out = tmp_path / "scores.json"
    monkeypatch.setattr(sys, "argv", ["eval_vocoder.py", str(corpus(tmp_path)), str(model), "--per-voice",
                                      "--json", str(out)])
    script.main()
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [r["model"] for r in rows] == ["Griffin-Lim (32 it.)", str(model)]
    assert all(r["items"] == 4 and r["mel_l1"] > 0 and r["mrstft"] > 0 for r in rows)
    griffin_lim, untrained = rows
    assert 1.0 <= untrained["pesq_wb"] < griffin_lim["pesq_wb"] <= 4.7  # a random model is noise
    table = capsys.readouterr().out
    voice_rows = [line.split("|") for line in table.splitlines() if line.startswith(("| en-gb |", "| kal_diphone |"))]
    assert len(voice_rows) == 2 and all(cells[2].strip() == "2" for cells in voice_rows)
    for cells, voice in zip(sorted(voice_rows), VOICES, strict=True):
        mine = [i for i in range(4) if VOICES[i % 2] == voice]
        for r, cell in zip(rows, cells[3:5], strict=True):  # each cell is the mean of that voice's items
            assert cell.strip() == f"{np.nanmean([r['pesq_items'][i] for i in mine]):.3f}"


def test_phase_by_band_prints_pesq_of_each_phase_mix_and_distances_per_band(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = import_script("phase_by_band")
    model = write_random_checkpoint(tmp_path / "model", "mel", dim=16)
    monkeypatch.setattr(sys, "argv", ["phase_by_band.py", str(corpus(tmp_path)), str(model), "--items", "2",
                                      "--cutoffs", "1000"])
    script.main()
    out = capsys.readouterr().out
    assert "PESQ wb, mean of 2 utterances" in out
    assert "real magnitude, Griffin-Lim phase < 1000 Hz, model's above" in out
    for name in ("model", "Griffin-Lim"):
        (line,) = [x for x in out.splitlines() if x.strip().startswith(name) and "inst. frequency" in x]
        numbers = [float(v) for v in line.replace("[", " ").replace("]", " ").split() if v[0].isdigit()]
        assert len(numbers) == 2 * len(script.BANDS_HZ) and all(0 <= v <= 2 for v in numbers)
