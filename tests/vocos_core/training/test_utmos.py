"""Our UTMOS22 strong learner against SpeechMOS's, on the fixture of scripts/make_utmos_fixture.py
(formula weights; the official weights are not in this environment), and how a missing weight file
is reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vocos_core.training import metrics, utmos
from vocos_core.training.utmos import UTMOS22Strong, load_utmos

from .training_helpers import ROOT, fixture_script

FIXTURE = ROOT / "tests" / "data" / "training" / "utmos.pt"


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    return torch.load(FIXTURE, weights_only=False)


@pytest.fixture(scope="module")
def formula_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SpeechMOS's parameter names and shapes filled by the fixture's formula, saved as a weight file."""
    model = UTMOS22Strong()
    fixture_script("make_utmos_fixture").fill_utmos(model)
    path = tmp_path_factory.mktemp("utmos") / utmos.WEIGHTS_FILE
    torch.save(model.state_dict(), path)
    yield path
    path.unlink()  # 0.4 GB that pytest would keep until the session ends


def test_frames_and_scores_equal_speechmos(fixture: dict[str, Any], formula_weights: Path) -> None:
    model = load_utmos(formula_weights)  # strict: every SpeechMOS name and shape
    items = fixture_script("make_utmos_fixture").audio_batch()
    with torch.inference_mode():
        for audio, frames, score in zip(items, fixture["frames"], fixture["scores"], strict=True):
            torch.testing.assert_close(model.wav2vec2(audio[None])[0], frames, rtol=1e-4, atol=1e-4)
            assert utmos.utmos_score(model, audio[None]) == pytest.approx(score, rel=1e-5)
    assert fixture["scores"][0] != pytest.approx(fixture["scores"][1], abs=1e-3)  # the score sees the input


def test_missing_weights_say_where_they_were_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert utmos.installed_weights() is None
    reason = metrics.utmos_unavailable()
    assert reason is not None and utmos.WEIGHTS_FILE in reason and str(tmp_path) in reason
    with pytest.raises(FileNotFoundError, match="no UTMOS weights"):
        load_utmos()


def test_weights_in_the_hub_folder_are_found(formula_weights: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / utmos.WEIGHTS_FILE).symlink_to(formula_weights)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert utmos.installed_weights() == tmp_path / "checkpoints" / utmos.WEIGHTS_FILE
    assert metrics.utmos_unavailable() is None
