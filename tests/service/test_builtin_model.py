"""The built-in demo model: served only when nothing is configured and the official models are out of reach."""

from __future__ import annotations

import logging
from pathlib import Path

import huggingface_hub.constants
import pytest

from service.runtime.models import StartupError, load_models
from service.runtime.registry import model_specs
from service.settings import Settings
from vocos_core.builtin import DEMO_MEL_24KHZ
from vocos_core.pretrained import Vocos
from vocos_core.testing import Kind, write_random_checkpoint


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache


def test_only_unset_defaults_may_fall_back() -> None:
    assert [s.default for s in model_specs(Settings())] == [True, True]
    assert [(s.name, s.default) for s in model_specs(Settings(mel_model="charactr/vocos-mel-24khz"))] == [
        ("mel", False), ("encodec", False)]  # a model setting, so nothing falls back
    assert [(s.name, s.default) for s in model_specs(Settings(encodec_model="none"))] == [("mel", False)]
    assert [s.default for s in model_specs(Settings(models="mel=charactr/vocos-mel-24khz"))] == [False]


def test_with_no_setting_and_no_hub_the_server_serves_the_demo_with_one_warning(
        no_hub: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        models = load_models(Settings(device="cpu"))
    assert list(models) == ["mel"]
    assert models["mel"].public_name == "local:demo-mel-24khz"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "built-in demo model" in message and "synthetic speech" in message and "\n" not in message


@pytest.mark.parametrize("settings", [
    {"mel_model": "charactr/vocos-mel-24khz", "encodec_model": "none"},
    {"models": "mel=charactr/vocos-mel-24khz"},
    {"encodec_model": "none"},  # the mel model left at its default is still a configured server
])
def test_explicit_model_settings_never_fall_back(no_hub: None, settings: dict[str, str]) -> None:
    # "the mel model" for VOCOS_MEL_MODEL's, "model 'mel'" for one named in VOCOS_MODELS (names may be any word)
    with pytest.raises(StartupError, match=r"cannot load (the mel model|model 'mel') from 'charactr/vocos-mel-24khz'"):
        load_models(Settings(device="cpu", **settings))


def _cache_one_official_model(cache: Path, kind: Kind, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub cache holding ``charactr/vocos-<kind>-24khz`` alone (a tiny random model) at one snapshot."""
    # huggingface_hub reads HF_HOME once, at its import: the cache in use is its constant.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    repo = cache / f"models--charactr--vocos-{kind}-24khz"
    write_random_checkpoint(repo / "snapshots" / ("0" * 40), kind)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


@pytest.mark.parametrize(("cached", "missing"), [("encodec", "mel"), ("mel", "encodec")])
def test_a_cache_holding_one_official_model_stops_instead_of_serving_the_demo(
        no_hub: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encodec_weights: Path, cached: Kind,
        missing: str) -> None:
    # The demo once stood in for a missing official mel model beside the cached EnCodec one.
    _cache_one_official_model(tmp_path / "hub", cached, monkeypatch)
    with pytest.raises(StartupError, match=f"cannot load the {missing} model from 'charactr/vocos-{missing}-24khz'"):
        load_models(Settings(device="cpu", encodec_weights=str(encodec_weights)))


def test_the_demo_is_small_loads_strictly_and_says_what_it_is() -> None:
    size = sum(f.stat().st_size for f in DEMO_MEL_24KHZ.iterdir())
    assert size <= 10 * 1024 * 1024, f"{size} bytes"
    model = Vocos.from_pretrained(DEMO_MEL_24KHZ)
    assert (model.sample_rate, model.n_features, model.kind) == (24000, 100, "mel")
    card = (DEMO_MEL_24KHZ / "README.md").read_text(encoding="utf-8")
    assert "synthetic speech" in card and "demo" in card.lower()
