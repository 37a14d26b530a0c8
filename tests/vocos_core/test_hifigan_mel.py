"""The HiFi-GAN mel front-end (vocos_core.hifigan_mel): parity with hifi-gan's meldataset.py and librosa,
config parsing (ours and the Vocos PR #47 layout), strict loading, decoding and copy-synthesis.

Fixtures: tests/data/hifigan_mel/cases.npz (its README says how each case was computed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from vocos_core import CheckpointError, InputError, UnsupportedError, Vocos
from vocos_core.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from vocos_core.config import (
    HIFIGAN_MEL_CLASS_PATH,
    HiFiGANMelSpectrogramFeaturesConfig,
    MelSpectrogramFeaturesConfig,
    parse_config,
)
from vocos_core.hifigan_mel import HiFiGANMelSpectrogramFeatures, slaney_mel_filterbank
from vocos_core.testing import checkpoint_config, random_model, write_random_checkpoint

CASES = Path(__file__).resolve().parents[1] / "data" / "hifigan_mel" / "cases.npz"
DATA = dict(np.load(CASES))
INDEX: dict[str, dict[str, Any]] = json.loads(str(DATA["index"]))
HIFIGAN = [c for c, v in INDEX.items() if v["kind"] == "hifigan"]
PR47 = [c for c, v in INDEX.items() if v["kind"] == "pr47"]
PR47_CLASS_PATH = "vocos.feature_extractors.MelSpectrogramFeatures"


def rel_error(ours: np.ndarray | torch.Tensor, reference: np.ndarray) -> float:
    ours = ours.numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours.shape == reference.shape, f"shape {ours.shape} != reference {reference.shape}"
    return float(np.abs(ours.astype(np.float64) - reference).max() / np.abs(reference).max())


def items(case: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    names = INDEX[case]["items"]
    return [(names[i], DATA[f"{case}__audio{i}"], DATA[f"{case}__mel{i}"]) for i in range(len(names))]


def extractor(case: str) -> HiFiGANMelSpectrogramFeatures:
    entry = INDEX[case]
    if entry["kind"] == "hifigan":
        fe = HiFiGANMelSpectrogramFeaturesConfig(**entry["params"])
    else:
        fe = parse_config(pr47_config(entry["params"])).feature_extractor  # type: ignore[assignment]
    assert isinstance(fe, HiFiGANMelSpectrogramFeaturesConfig)
    return HiFiGANMelSpectrogramFeatures(fe)


def pr47_config(init_args: dict[str, Any]) -> dict[str, Any]:
    """A whole config.yaml mapping whose feature extractor is PR #47's MelSpectrogramFeatures."""
    config = checkpoint_config("mel")
    config["feature_extractor"] = {"class_path": PR47_CLASS_PATH, "init_args": dict(init_args)}
    config["backbone"]["init_args"]["input_channels"] = init_args.get("n_mels", 100)
    config["head"]["init_args"]["padding"] = init_args.get("padding", "center")
    return config


# -- parity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", HIFIGAN)
def test_filterbank_equals_librosa(case: str) -> None:
    p = INDEX[case]["params"]
    ours = slaney_mel_filterbank(p["sample_rate"], p["n_fft"], p["n_mels"], p["f_min"], p["f_max"])
    assert ours.dtype == np.float32
    assert rel_error(ours, DATA[f"{case}__filterbank"]) <= 1e-6
    # the module holds it transposed, torchaudio's (n_freqs, n_mels) layout
    fb = extractor(case).mel_spec.mel_scale.fb
    assert rel_error(fb.T.contiguous(), DATA[f"{case}__filterbank"]) <= 1e-6
    assert not [m for m in sys.modules if m.split(".")[0] == "librosa"], "librosa is never needed at run time"


@pytest.mark.parametrize("case", HIFIGAN + PR47)
def test_features_equal_the_reference(case: str) -> None:
    fe = extractor(case)
    for name, audio, mel in items(case):
        ours = fe(torch.from_numpy(audio)[None])[0]
        assert ours.dtype == torch.float32
        assert rel_error(ours, mel) <= 1e-5, f"{case} {name}"
        assert ours.shape[-1] == fe.num_frames(audio.shape[-1])


@pytest.mark.parametrize("case", HIFIGAN + PR47)
def test_any_leading_dimensions_as_the_mel_front_end(case: str) -> None:
    """``(S,)`` and ``(A, B, S)`` audio, as ``MelSpectrogramFeatures`` takes them (a 1-D signal failed in
    ``torch.stft``'s padding with an error about 2-D input)."""
    fe = extractor(case)
    _, audio, mel = items(case)[0]
    one = fe(torch.from_numpy(audio))
    assert one.shape == mel.shape[-2:] and rel_error(one, mel) <= 1e-5
    nested = fe(torch.from_numpy(np.stack([audio, audio]))[None])  # (1, 2, S)
    assert nested.shape == (1, 2, *one.shape) and torch.equal(nested[0, 1], nested[0, 0])


@pytest.mark.parametrize("case", HIFIGAN + PR47)
def test_batched_features_equal_the_reference(case: str) -> None:
    fe = extractor(case)
    by_length: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for _, audio, mel in items(case):
        by_length.setdefault(audio.shape[-1], []).append((audio, mel))
    for group in by_length.values():
        batch = fe(torch.from_numpy(np.stack([a for a, _ in group])))
        for ours, (_, mel) in zip(batch, group, strict=True):
            assert rel_error(ours, mel) <= 1e-5


@pytest.mark.parametrize("case", PR47)
def test_pr47_filterbank_equals_torchaudio(case: str) -> None:
    """Strict loading compares stored buffers to rebuilt ones: a PR #47 file holds torchaudio's."""
    fb = extractor(case).mel_spec.mel_scale.fb
    assert rel_error(fb, DATA[f"{case}__torchaudio_fb"]) <= 1e-5


# -- config --------------------------------------------------------------------------------------


def hifigan(**changes: Any) -> dict[str, Any]:
    """The hifigan-mel test config with feature-extractor init_args changed (None deletes one)."""
    config = checkpoint_config("hifigan-mel")
    args = config["feature_extractor"]["init_args"]
    for key, value in changes.items():
        if value is None:
            del args[key]
        else:
            args[key] = value
    return config


def test_config_parses() -> None:
    config = parse_config(checkpoint_config("hifigan-mel"))
    assert config.feature_extractor == HiFiGANMelSpectrogramFeaturesConfig(
        sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024, n_mels=80, f_min=0.0, f_max=8000.0,
        log_floor=1e-5, padding="same", magnitude_eps=1e-9)
    raw = checkpoint_config("hifigan-mel")
    assert parse_config(yaml.safe_load(yaml.safe_dump(raw))) == config
    args = hifigan(f_max=None)["feature_extractor"]["init_args"]
    args.update(sample_rate=16000, f_max=None, padding="center")
    fe = parse_config({**hifigan(), "feature_extractor": {"class_path": HIFIGAN_MEL_CLASS_PATH, "init_args": args}})
    assert fe.feature_extractor == HiFiGANMelSpectrogramFeaturesConfig(16000, 1024, 256, 1024, 80, 0.0, None,
                                                                       padding="center")
    for rate in (16000, 48000):
        parse_config(hifigan(sample_rate=rate, f_max=float(rate // 2)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"sample_rate": 8000}, r"sample_rate 8000 is out of range; the HiFi-GAN mel front-end expects 16000\.\.48000 Hz"),
    ({"sample_rate": 96000}, r"sample_rate 96000 is out of range.*expects 16000\.\.48000 Hz"),
    ({"sample_rate": 22050.0}, "sample_rate: expected a positive integer, got 22050.0"),
    ({"sample_rate": None}, "required argument 'sample_rate' is missing"),
    ({"win_length": None}, "required argument 'win_length' is missing"),
    ({"f_max": None}, "required argument 'f_max' is missing"),
    ({"n_mels": None}, "required argument 'n_mels' is missing"),
    ({"win_length": 2048}, "win_length 2048 exceeds n_fft 1024"),
    ({"hop_length": 2048}, "hop_length 2048 exceeds n_fft 1024"),
    ({"f_max": 12000.0}, r"0 <= f_min < f_max <= sample_rate / 2 \(11025\)"),
    ({"f_min": 9000.0}, "f_min < f_max"),
    ({"f_min": -1.0}, "0 <= f_min"),
    ({"log_floor": 0.0}, "log_floor > 0"),
    ({"padding": "valid"}, r"choose one of \['center', 'same'\]"),
    ({"fmax": 8000}, r"unknown argument\(s\) \['fmax'\]; valid:"),
])
def test_invalid_configs_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        parse_config(hifigan(**changes), where="config.yaml")


def test_channels_must_match_n_mels() -> None:
    config = hifigan()
    config["backbone"]["init_args"]["input_channels"] = 100
    with pytest.raises(CheckpointError, match="produces 80 channels"):
        parse_config(config)


def test_pr47_layout_parses_to_the_slaney_front_end() -> None:
    args = {"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "n_mels": 80, "padding": "same",
            "f_min": 0, "f_max": 8000, "norm": "slaney", "mel_scale": "slaney"}
    fe = parse_config(pr47_config(args)).feature_extractor
    assert fe == HiFiGANMelSpectrogramFeaturesConfig(22050, 1024, 256, 1024, 80, 0.0, 8000.0, log_floor=1e-7,
                                                     padding="same", magnitude_eps=0.0)
    # one of the PR's arguments is enough; the others take the PR's defaults (f_max 8000, Slaney)
    fe = parse_config(pr47_config({"sample_rate": 22050, "n_mels": 80, "f_min": 0})).feature_extractor
    assert isinstance(fe, HiFiGANMelSpectrogramFeaturesConfig)
    assert (fe.f_max, fe.padding, fe.n_fft, fe.hop_length) == (8000.0, "center", 1024, 256)
    # the official layout is untouched
    assert parse_config(checkpoint_config("mel")).feature_extractor == MelSpectrogramFeaturesConfig()


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"norm": None}, UnsupportedError, "norm None is not supported.*norm 'slaney' and mel_scale 'slaney' only"),
    ({"mel_scale": "htk"}, UnsupportedError, "mel_scale 'htk' is not supported"),
    ({"win_length": 800}, CheckpointError, r"unknown argument\(s\) \['win_length'\]"),
    ({"sample_rate": 8000}, CheckpointError, "expects 16000..48000 Hz"),
])
def test_pr47_layout_refusals(changes: dict[str, Any], error: type, message: str) -> None:
    args = {"sample_rate": 22050, "n_mels": 80, "f_max": 8000, **changes}
    with pytest.raises(error, match=message):
        parse_config(pr47_config(args))


# -- checkpoints and inference ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hifigan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("hifigan-mel"), "hifigan-mel", dim=32, num_layers=1)


@pytest.fixture(scope="module")
def model(hifigan_checkpoint: Path) -> Vocos:
    return Vocos.from_pretrained(hifigan_checkpoint)


def test_random_checkpoint_round_trips_strictly(hifigan_checkpoint: Path, model: Vocos) -> None:
    raw = yaml.safe_load((hifigan_checkpoint / CONFIG_NAME).read_text())
    assert raw["feature_extractor"]["class_path"] == HIFIGAN_MEL_CLASS_PATH
    state = torch.load(hifigan_checkpoint / WEIGHTS_NAME, weights_only=True)
    assert {"feature_extractor.mel_spec.spectrogram.window", "feature_extractor.mel_spec.mel_scale.fb"} <= set(state)
    assert state["feature_extractor.mel_spec.mel_scale.fb"].shape == (513, 80)
    ours = model.state_dict()
    assert set(ours) == set(state)
    assert all(torch.equal(ours[k], state[k]) for k in state)
    assert isinstance(model.feature_extractor, HiFiGANMelSpectrogramFeatures)
    assert (model.kind, model.sample_rate, model.n_features, model.hop_length) == ("mel", 22050, 80, 256)
    assert model.min_audio_samples() == 385  # reflect padding of 384 needs 385 samples


def test_inconsistent_or_missing_buffers_are_refused(hifigan_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(hifigan_checkpoint / WEIGHTS_NAME, weights_only=True)
    config = (hifigan_checkpoint / CONFIG_NAME).read_text()
    (tmp_path / CONFIG_NAME).write_text(config)
    key = "feature_extractor.mel_spec.mel_scale.fb"
    torch.save({**state, key: state[key] * 1.01}, tmp_path / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match=f"buffer {key} differs"):
        Vocos.from_pretrained(tmp_path)
    torch.save({k: v for k, v in state.items() if k != key}, tmp_path / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match=f"missing keys \\[{key}\\]"):
        Vocos.from_pretrained(tmp_path)


@pytest.mark.parametrize("case", PR47)
def test_pr47_checkpoint_with_torchaudio_buffers_loads_strictly(case: str, tmp_path: Path) -> None:
    """A file saved by PR #47's Vocos holds torchaudio's window and filterbank under our keys."""
    params = INDEX[case]["params"]
    config = pr47_config(params)
    config["head"]["init_args"]["padding"] = params["padding"]
    state = random_model(config).state_dict()
    state["feature_extractor.mel_spec.mel_scale.fb"] = torch.from_numpy(DATA[f"{case}__torchaudio_fb"])
    state["feature_extractor.mel_spec.spectrogram.window"] = torch.hann_window(params["n_fft"])
    (tmp_path / CONFIG_NAME).write_text(yaml.safe_dump(config))
    torch.save(state, tmp_path / WEIGHTS_NAME)
    model = Vocos.from_pretrained(tmp_path)
    assert model.sample_rate == params["sample_rate"]
    _, audio, mel = items(case)[-2]
    assert rel_error(model.audio_to_features(torch.from_numpy(audio))[0], mel) <= 1e-5


@pytest.mark.usefixtures("matmul_way")
def test_decode_and_decode_batch(model: Vocos) -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = [40, 41, 7, 120]
    features = [torch.randn(80, t, generator=gen) - 5.0 for t in lengths]
    batched = model.decode_batch(features)
    for x, out in zip(features, batched, strict=True):
        solo = model.decode(x[None])
        assert solo.shape == (1, x.shape[-1] * 256) == (1, model.num_samples(x.shape[-1]))
        assert out.shape == solo[0].shape
        assert float((out - solo[0]).abs().max() / solo.abs().max()) <= 1e-5


def test_copy_synthesis_shapes(model: Vocos) -> None:
    gen = torch.Generator().manual_seed(1)
    for samples in (385, 22050, 22050 + 77):
        audio = (0.2 * torch.randn(2, samples, generator=gen)).clamp(-1, 1)
        frames = samples // 256
        assert model.audio_to_features(audio).shape == (2, 80, frames)
        out = model(audio)
        assert out.shape == (2, frames * 256)
        assert bool(torch.isfinite(out).all())
        # features of the model equal meldataset's, through the whole model too
        mel = model.audio_to_features(audio[1])  # (S,) -> (1, 80, T)
        assert torch.allclose(model.decode(mel), out[1:], rtol=0, atol=1e-5 * float(out.abs().max()))
    with pytest.raises(InputError):
        model(torch.zeros(1, 384))


def test_reference_audio_through_the_model(model: Vocos) -> None:
    _, audio, mel = items("hifigan_22k")[-2]  # chirp 12345 samples at 22.05 kHz
    assert rel_error(model.audio_to_features(torch.from_numpy(audio))[0], mel) <= 1e-5


def test_spectral_buffers_stay_float32_in_half_precision(hifigan_checkpoint: Path) -> None:
    model = Vocos.from_pretrained(hifigan_checkpoint).to(torch.bfloat16)
    fe = model.feature_extractor
    assert isinstance(fe, HiFiGANMelSpectrogramFeatures)
    assert fe.mel_spec.mel_scale.fb.dtype == fe.mel_spec.spectrogram.window.dtype == torch.float32
    _, audio, mel = items("hifigan_22k")[-2]
    assert rel_error(model.audio_to_features(torch.from_numpy(audio))[0], mel) <= 1e-5
    assert model(torch.from_numpy(audio)[None]).shape == (1, 48 * 256)
