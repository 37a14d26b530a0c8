"""Work cut into steps (``vocos_core.steps``): the budget of a slice, and the same result for any budget;
the mel front-ends as steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from steps_helpers import unit_by_unit

from vocos_core import Vocos, feature_extractors
from vocos_core import steps as steps_module
from vocos_core.steps import Steps, advance, mapped, run_steps
from vocos_core.testing import Kind, write_random_checkpoint

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def units(clock: FakeClock, durations: list[float]) -> Steps:
    """A unit per duration, each advancing the fake clock by it; the even ones give a piece: their index."""
    for i, seconds in enumerate(durations):
        clock.now += seconds
        yield torch.tensor([i]) if i % 2 == 0 else None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(steps_module.time, "monotonic", fake.monotonic)
    return fake


def slices(steps: Steps, budget_s: float | None) -> list[list[int]]:
    """The pieces each call of ``advance`` gave, until done."""
    out: list[list[int]] = []
    done = False
    while not done:
        done, pieces = advance(steps, budget_s)
        out.append([int(piece) for piece in pieces])
    return out


def test_a_slice_stops_before_the_next_unit_would_pass_the_budget(clock: FakeClock) -> None:
    # After 3 units (30 ms) a fourth of 10 ms would end at 40 ms > 35 ms: units 0-2, 3-5, 6-8, 9.
    assert slices(units(clock, [0.01] * 10), 0.035) == [[0, 2], [4], [6, 8], []]


def test_a_slice_runs_at_least_one_unit_however_long(clock: FakeClock) -> None:
    assert slices(units(clock, [0.2, 0.2, 0.2, 0.01]), 0.05) == [[0], [], [2], []]


def test_the_next_unit_is_assumed_as_long_as_the_longest_so_far(clock: FakeClock) -> None:
    # 31 ms in, after a unit of 30 ms, another such unit could end at 61 ms: the slice ends after
    # units 0 and 1; the next starts afresh and runs 2 to 4.
    assert slices(units(clock, [0.001, 0.03, 0.001, 0.001, 0.001]), 0.05) == [[0], [2, 4]]


def test_no_budget_runs_every_unit_and_any_budget_gives_the_same_output(clock: FakeClock) -> None:
    assert slices(units(clock, [0.01] * 5), None) == [[0, 2, 4]]
    assert torch.equal(run_steps(units(clock, [0.01] * 5)), torch.tensor([0, 2, 4]))
    for budget in (0.0, 0.015, 1.0):
        assert [piece for ran in slices(units(clock, [0.01] * 5), budget) for piece in ran] == [0, 2, 4]


def test_mapped_applies_to_pieces_and_keeps_the_units(clock: FakeClock) -> None:
    steps = mapped(units(clock, [0.01] * 4), lambda piece: piece * 10)
    assert slices(steps, 0.0) == [[0], [], [20], [], []]


@pytest.mark.parametrize(("kind", "padding"), [("mel", "center"), ("mel", "same"), ("hifigan-mel", "same"),
                                               ("hifigan-mel", "center")])
def test_a_spectrogram_unit_by_unit_equals_one_pass(kind: Kind, padding: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Units of 7 frames put a seam every 7 windows; every frame must still read its own window (a
    # misplaced one would be off by the order of the features). Other matmul and FFT shapes round
    # differently: about 1e-7 relative.
    monkeypatch.setattr(feature_extractors, "SPECTROGRAM_UNIT_FRAMES", 7)
    model = Vocos.from_pretrained(write_random_checkpoint(tmp_path, kind, dim=16, num_layers=1, padding=padding))
    audio = 0.3 * torch.randn(2, 24_000 + 123, generator=torch.Generator().manual_seed(3))
    calls, pieces = unit_by_unit(model.audio_to_features_steps(audio))
    features = torch.cat(pieces, dim=-1)
    whole = model.feature_extractor(audio)
    assert features.shape == whole.shape and calls > whole.shape[-1] // 7
    assert float((features - whole).abs().max()) <= 1e-6 * float(whole.abs().max())


@pytest.mark.parametrize("name", ["vocos-mel-tiny", "vocos-mel-tiny-same"])
def test_a_spectrogram_unit_by_unit_matches_the_reference(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feature_extractors, "SPECTROGRAM_UNIT_FRAMES", 7)
    model = Vocos.from_pretrained(REFERENCE / name)
    cases = np.load(REFERENCE / f"{name}.cases.npz")
    _, pieces = unit_by_unit(model.audio_to_features_steps(torch.from_numpy(cases["audio_in"])))
    features = torch.cat(pieces, dim=-1)
    expected = torch.from_numpy(cases["mel_of_audio_in"])
    assert features.shape == expected.shape
    assert float((features - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
