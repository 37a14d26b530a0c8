"""config.yaml parsing: every supported class, and one clear error for everything else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vocos_core.config import (
    EncodecFeaturesConfig,
    ISTFTHeadConfig,
    MelSpectrogramFeaturesConfig,
    VocosBackboneConfig,
    load_config,
    parse_config,
)
from vocos_core.errors import CheckpointError, UnsupportedError
from vocos_core.testing import checkpoint_config

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


def test_official_layouts_parse() -> None:
    mel = load_config(REFERENCE / "vocos-mel-tiny" / "config.yaml")
    assert mel.feature_extractor == MelSpectrogramFeaturesConfig(24000, 1024, 256, 100, "center")
    assert mel.backbone == VocosBackboneConfig(100, 64, 192, 2)
    assert mel.head == ISTFTHeadConfig(64, 1024, 256, "center")
    enc = load_config(REFERENCE / "vocos-encodec-tiny" / "config.yaml")
    assert enc.feature_extractor == EncodecFeaturesConfig("encodec_24khz", (1.5, 3.0, 6.0, 12.0))
    assert isinstance(enc.backbone, VocosBackboneConfig)
    assert enc.backbone.adanorm_num_embeddings == 4


def bad(**changes: object) -> dict:
    config = checkpoint_config("mel")
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = config
        for part in path:
            node = node[part]
        node[last] = value
    return config


@pytest.mark.parametrize(("config", "error", "message"), [
    (bad(backbone__class_path="vocos.models.Evil"), UnsupportedError, r"not supported; valid: \["),
    (bad(feature_extractor__class_path="os.system"), UnsupportedError, "not supported"),
    (bad(head__init_args__padding="valid"), CheckpointError, r"choose one of \['center', 'same'\]"),
    (bad(backbone__init_args__dim="64"), CheckpointError, "expected a positive integer"),
    (bad(backbone__init_args__dim=-3), CheckpointError, "expected a positive integer"),
    (bad(backbone__init_args__depth=3), CheckpointError, r"unknown argument\(s\) \['depth'\]; valid:"),
    (bad(backbone__init_args__input_channels=80), CheckpointError, "produces 100 channels"),
    (bad(head__init_args__dim=16), CheckpointError, "does not match backbone.dim"),
    (bad(head=None), CheckpointError, "section 'head' needs 'class_path'"),
    (bad(head__init_args__hop_length=2048), CheckpointError, "larger than head.n_fft 1024; frames must overlap"),
    (bad(head__init_args__hop_length=320, head__init_args__n_fft=1280), CheckpointError,
     r"the head's hop \(320 samples\) is not the feature extractor's \(256\)"),
    ({"backbone": {}}, CheckpointError, "missing section"),
    # keys beside class_path and init_args would be ignored: a misspelt init_args, an argument one level up
    (bad(backbone__dim=8), CheckpointError, r"section 'backbone' has unknown key\(s\) \['dim'\]; expected"),
    (bad(feature_extractor__init_arg={"padding": "same"}), CheckpointError, r"unknown key\(s\) \['init_arg'\]"),
    (bad(head__dict_kwargs={"x": 1}), CheckpointError, r"unknown key\(s\) \['dict_kwargs'\]"),
    (bad(backbone__class_path=["x"]), UnsupportedError, r"class_path \['x'\] is not supported"),
    (bad(feature_extractor__init_args=[1]), CheckpointError, "init_args must be a mapping, got list"),
    ([1, 2], CheckpointError, "expected a mapping"),
])
def test_malformed_configs_are_refused(config: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        parse_config(config, where="config.yaml")


def test_an_empty_dict_kwargs_of_jsonargparse_is_accepted() -> None:
    config = checkpoint_config("mel")
    config["backbone"]["dict_kwargs"] = {}
    assert parse_config(config) == parse_config(checkpoint_config("mel"))


def test_encodec_bandwidths_are_those_encodec_24khz_gives() -> None:
    config = checkpoint_config("encodec")
    config["feature_extractor"]["init_args"]["bandwidths"] = [-1.5, 3.0, 6.0, 12.0]
    with pytest.raises(CheckpointError, match=r"bandwidths \[-1.5, 3.0, 6.0, 12.0\] are not all bandwidths of "
                                              r"encodec_24khz; choose from \[1.5, 3.0, 6.0, 12.0, 24.0\]"):
        parse_config(config)
    config["feature_extractor"]["init_args"]["bandwidths"] = [1.5, 3.0, 12.0, 24.0]
    assert parse_config(config).feature_extractor.bandwidths == (1.5, 3.0, 12.0, 24.0)


def test_missing_required_argument() -> None:
    config = checkpoint_config("mel")
    del config["backbone"]["init_args"]["num_layers"]
    with pytest.raises(CheckpointError, match="required argument 'num_layers' is missing"):
        parse_config(config)


def test_encodec_48khz_is_a_clear_not_supported() -> None:
    config = checkpoint_config("encodec")
    config["feature_extractor"]["init_args"]["encodec_model"] = "encodec_48khz"
    with pytest.raises(UnsupportedError, match=r"encodec_48khz.*valid: \['encodec_24khz'\]"):
        parse_config(config)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("backbone: [unclosed")
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not valid YAML")):
        load_config(path)
    with pytest.raises(CheckpointError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a YAML text file (not UTF-8")):
        load_config(path)


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("backbone: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(CheckpointError, match="not valid YAML"):
        load_config(path)


def test_config_round_trips_through_yaml() -> None:
    for kind in ("mel", "encodec"):
        raw = checkpoint_config(kind)  # type: ignore[arg-type]
        assert parse_config(yaml.safe_load(yaml.safe_dump(raw))) == parse_config(raw)
