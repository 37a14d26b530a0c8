"""Parity with the reference implementation (vocos 0.1.0 + encodec 0.1.1) on random-weight checkpoints.

Fixtures: tests/data/reference (copied from the shared reference folder; its README lists the cases)
and tests/data/extra (component classes the shared cases lack, made by scripts/make_extra_reference.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vocos_core import Vocos
from vocos_core.encodec.testing import codes_differing_beyond_ties

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE = DATA / "reference"
EXTRA = DATA / "extra"
TOLERANCE = 1e-4  # max |ours - reference| / max |reference|
# Every test here runs once per CPU matmul way: mkl, onednn, bf16x3 (tests/vocos_core/conftest.py).
pytestmark = pytest.mark.usefixtures("matmul_way")


def rel_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    ref = torch.from_numpy(reference)
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    return float((ours - ref).abs().max() / ref.abs().max())


def cases(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(REFERENCE / f"{name}.cases.npz"))


@pytest.mark.parametrize("name", ["vocos-mel-tiny", "vocos-mel-tiny-same"])
def test_mel_model_matches_reference(name: str) -> None:
    model = Vocos.from_pretrained(REFERENCE / name)
    c = cases(name)
    audio = torch.from_numpy(c["audio_in"])
    assert rel_error(model.feature_extractor(audio), c["mel_of_audio_in"]) <= TOLERANCE
    assert rel_error(model(audio), c["resynth_of_audio_in"]) <= TOLERANCE
    assert rel_error(model.decode(torch.from_numpy(c["mel_in"])), c["decode_of_mel_in"]) <= TOLERANCE
    assert rel_error(model.decode(torch.from_numpy(c["mel_in_short"])), c["decode_of_mel_in_short"]) <= TOLERANCE


@pytest.mark.parametrize("bandwidth_id", [0, 1, 2, 3])
def test_encodec_decode_matches_reference(bandwidth_id: int) -> None:
    model = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny")
    c = cases("vocos-encodec-tiny")
    features = model.codes_to_features(torch.from_numpy(c[f"codes_bw{bandwidth_id}"]))
    assert rel_error(features, c[f"features_of_codes_bw{bandwidth_id}"]) <= TOLERANCE
    audio = model.decode(features, bandwidth_id=torch.tensor([bandwidth_id]))
    assert rel_error(audio, c[f"decode_of_codes_bw{bandwidth_id}"]) <= TOLERANCE


@pytest.mark.parametrize("bandwidth_id", [0, 1, 2, 3])
def test_encodec_resynthesis_matches_reference(bandwidth_id: int, shared_encodec_weights: Path) -> None:
    """Codes equal the reference's up to float32 near-ties (which CPUs round apart, see
    tests/vocos_core/encodec/test_encodec_reference.py); the resynthesis decodes the codes found, and
    the reference's codes decode to the reference's resynthesis."""
    model = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny", encodec_weights=shared_encodec_weights)
    c = cases("vocos-encodec-tiny")
    audio, bandwidth = torch.from_numpy(c["audio_in"]), torch.tensor([bandwidth_id])
    encoder = model.feature_extractor.encoder()  # type: ignore[operator]
    codes = encoder.encode(audio, model.bandwidths[bandwidth_id])
    expected = torch.from_numpy(c[f"encodec_codes_of_audio_in_bw{bandwidth_id}"])
    beyond, _ = codes_differing_beyond_ties(encoder, audio, codes, expected)
    assert not beyond, f"codes differ from the reference beyond near-ties: {beyond}"
    resynth = model(audio, bandwidth_id=bandwidth)
    assert rel_error(resynth, model.decode(model.codes_to_features(codes), bandwidth_id=bandwidth).numpy()) <= 1e-6
    from_reference_codes = model.decode(model.codes_to_features(expected), bandwidth_id=bandwidth)
    assert rel_error(from_reference_codes, c[f"resynth_of_audio_in_bw{bandwidth_id}"]) <= TOLERANCE


EXTRA_CASES = sorted(p.name for p in EXTRA.iterdir() if p.is_dir())


def test_extra_cases_cover_every_other_component() -> None:
    configs = " ".join((EXTRA / n / "config.yaml").read_text() for n in EXTRA_CASES)
    for class_name in ["VocosResNetBackbone", "IMDCTSymExpHead", "IMDCTCosHead"]:
        assert class_name in configs


@pytest.mark.parametrize("name", EXTRA_CASES)
def test_other_components_match_reference(name: str) -> None:
    model = Vocos.from_pretrained(EXTRA / name)
    c = dict(np.load(EXTRA / "cases.npz"))
    assert rel_error(model.decode(torch.from_numpy(c[f"{name}/mel_in"])), c[f"{name}/decode"]) <= TOLERANCE
    assert rel_error(model(torch.from_numpy(c[f"{name}/audio_in"])), c[f"{name}/resynth"]) <= TOLERANCE


def test_filterbank_rebuilt_equals_stored_buffer() -> None:
    state = torch.load(REFERENCE / "vocos-mel-tiny" / "pytorch_model.bin", weights_only=True)
    ours = Vocos.from_hparams(REFERENCE / "vocos-mel-tiny" / "config.yaml").state_dict()
    for key in ["feature_extractor.mel_spec.mel_scale.fb", "feature_extractor.mel_spec.spectrogram.window",
                "head.istft.window"]:
        assert torch.allclose(ours[key], state[key], rtol=0, atol=1e-6), key
