"""Calls written for the reference package (vocos 0.1.0) work unchanged on ``vocos_core.Vocos``.

Reference values: tests/data/reference and tests/data/extra (see tests/vocos_core/test_parity.py).
"""

from __future__ import annotations

import inspect
import pydoc
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from vocos_core import InputError, Vocos

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE = DATA / "reference"
EXTRA = DATA / "extra"
TOLERANCE = 1e-4  # max |ours - reference| / max |reference|, as test_parity.py


def rel_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    ref = torch.from_numpy(reference).to(ours.dtype)
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("name", ["vocos-mel-tiny", "vocos-mel-tiny-same"])
def test_mel_feature_extractor_takes_any_leading_dims(name: str) -> None:
    """The reference's front-end is torchaudio's MelSpectrogram: ``(S,)`` -> ``(n_mels, T)``,
    ``(B, 1, S)`` -> ``(B, 1, n_mels, T)``. Ours took ``(B, S)`` only (a RuntimeError from reflect padding)."""
    model = Vocos.from_pretrained(REFERENCE / name)
    c = dict(np.load(REFERENCE / f"{name}.cases.npz"))
    audio = torch.from_numpy(c["audio_in"])  # (2, S)
    one = model.feature_extractor(audio[1])
    assert one.shape == c["mel_of_audio_in"].shape[1:]
    assert rel_error(one, c["mel_of_audio_in"][1]) <= TOLERANCE
    channel = model.feature_extractor(audio[:, None])
    assert channel.shape == (2, 1, *c["mel_of_audio_in"].shape[1:])
    assert torch.equal(channel[:, 0], model.feature_extractor(audio))


def test_feature_extractors_take_the_keywords_vocos_forward_passes() -> None:
    """The reference's ``Vocos.forward`` passes its keywords to the feature extractor, so ported code calls
    ``feature_extractor(audio, bandwidth_id=...)`` on either kind: the mel one ignores it, the EnCodec one
    needs it (the reference's ValueError; InputError is one)."""
    mel = Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny")
    audio = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mel.feature_extractor(audio, bandwidth_id=torch.tensor([0])), mel.feature_extractor(audio))
    enc = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny")
    with pytest.raises(InputError, match="bandwidth_id is required"):
        enc.feature_extractor(audio)
    with pytest.raises(ValueError, match=r"bandwidth_id \[4\] out of range"):
        enc.feature_extractor(audio, bandwidth_id=torch.tensor([4]))


def test_mel_feature_extractor_has_the_reference_attributes() -> None:
    fe = Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny-same").feature_extractor
    assert fe.padding == "same"  # type: ignore[union-attr]
    spec = fe.mel_spec  # type: ignore[union-attr]
    assert (spec.sample_rate, spec.n_fft, spec.win_length, spec.hop_length, spec.n_mels) == (24000, 1024, 1024, 256,
                                                                                              100)


@pytest.mark.parametrize("name", ["vocos-mel-tiny", "vocos-mel-tiny-same", "mel-convnext-imdctcos-center",
                                  "mel-convnext-imdctsymexp-same", "mel-resnet-istft-center"])
def test_double_model_decodes_in_float64(name: str) -> None:
    """``.double()`` on the reference gives float64 audio; ours gave float32 (the head's transforms ran
    in float32 for any model dtype, as they still do for half precision)."""
    if name.startswith("vocos-"):
        model, c = Vocos.from_pretrained(REFERENCE / name), dict(np.load(REFERENCE / f"{name}.cases.npz"))
        mel, expected = c["mel_in"], c["decode_of_mel_in"]
    else:
        model, c = Vocos.from_pretrained(EXTRA / name), dict(np.load(EXTRA / "cases.npz"))
        mel, expected = c[f"{name}/mel_in"], c[f"{name}/decode"]
    model.double()
    for features in (torch.from_numpy(mel).double(), torch.from_numpy(mel)):
        audio = model.decode(features)
        assert audio.dtype == torch.float64
        assert rel_error(audio, expected) <= TOLERANCE


class _BackboneReachedError(Exception):
    """Raised by a hook once the backbone's input is seen, so that no meta-device compute runs."""


def test_decode_moves_cpu_features_to_the_models_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """``decode`` of CPU features on a GPU model gave torch's deep device-mismatch RuntimeError, while
    ``forward``, ``decode_batch`` and ``codes_to_features`` move their inputs. The model's device is faked
    (no GPU needed): the backbone must receive the features on it."""
    model = Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny")
    monkeypatch.setattr(Vocos, "_device", lambda self: torch.device("meta"))
    seen: list[torch.device] = []

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].device)
        raise _BackboneReachedError

    model.backbone.register_forward_pre_hook(record)
    with pytest.raises(_BackboneReachedError):
        model.decode(torch.randn(1, 100, 8))
    assert seen == [torch.device("meta")]


def test_annotations_take_the_bandwidth_ids_the_methods_take() -> None:
    """A ``mypy --strict`` user script was refused ``decode_codes(codes, bandwidth_id=torch.tensor([2]))``
    (the reference's way of giving an id, which runs) and ``decode_batch(items, bandwidth_ids=2)``."""
    enc = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny")
    codes = torch.randint(0, 1024, (8, 1, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(enc.decode_codes(codes, bandwidth_id=torch.tensor([2])), enc.decode_codes(codes, 2))
    features = enc.codes_to_features(codes)[0]
    assert torch.equal(enc.decode_batch([features], bandwidth_ids=2)[0], enc.decode_batch([features], [2])[0])
    decode_codes = inspect.signature(Vocos.decode_codes, eval_str=True).parameters["bandwidth_id"].annotation
    decode_batch = inspect.signature(Vocos.decode_batch, eval_str=True).parameters["bandwidth_ids"].annotation
    assert torch.Tensor in typing.get_args(decode_codes)
    assert int in typing.get_args(decode_batch)


def test_help_shows_our_docstrings_not_nn_modules() -> None:
    """``help(Vocos)`` showed nn.Module's "Initialize internal Module state..." for the constructor,
    and nothing for ``kind``, ``sample_rate``, ``n_features``, ``bandwidths``."""
    text = pydoc.render_doc(Vocos, renderer=pydoc.plaintext)
    assert "Initialize internal Module state" not in text.split("Methods inherited from")[0]
    assert Vocos.__init__.__doc__ is not None and "config" in Vocos.__init__.__doc__
    for name in ("kind", "sample_rate", "n_features", "bandwidths", "hop_length"):
        prop = getattr(Vocos, name)
        assert isinstance(prop, property) and prop.__doc__, name
    assert "InputError" in (Vocos.__doc__ or "") and "CheckpointError" in (Vocos.from_pretrained.__doc__ or "")


def test_the_package_is_marked_typed_for_its_users() -> None:
    """Without py.typed (PEP 561) in the installed package, mypy skips vocos_core ("missing library stubs or
    py.typed marker") and a user's code calling it is not checked."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    assert (root / "vocos_core" / "py.typed").is_file()
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["vocos_core"]


@pytest.mark.parametrize(("shape", "bandwidth_id"), [((1, 8, 30), None), ((2, 8, 30), 2)])
def test_encodecs_batch_layout_is_named_in_the_refusal(shape: tuple[int, ...], bandwidth_id: int | None) -> None:
    """EnCodec's encode gives (B, K, L), the reference's decode takes (K, B, L): a pipeline's (1, 8, L) grid was
    told "1 codebooks match no bandwidth", and a (2, 8, L) one at 6 kbps "uses 8 codebooks, got 2"."""
    model = Vocos.from_pretrained(str(REFERENCE / "vocos-encodec-tiny"))
    codes = torch.randint(0, 1024, shape)
    with pytest.raises(InputError, match=r"EnCodec's encode gives \(B, K, L\): pass codes\.transpose\(0, 1\)"):
        model.decode_codes(codes, bandwidth_id=bandwidth_id)
    assert model.decode_codes(codes.transpose(0, 1), bandwidth_id=bandwidth_id).shape[0] == shape[0]

