"""``vocos-train export``: the Hub layout, loaded strictly by vocos_core, decoding as the trained generator."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from vocos_core.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from vocos_core.pretrained import Vocos
from vocos_core.training.cli import main
from vocos_core.training.experiment import GENERATOR_PARTS, VocosExp

from .test_fit import last_checkpoint
from .training_helpers import CONFIGS, tiny_config

# Each test runs Lightning fits (the full-size discriminators): tens of seconds on 2 CPU cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("trained")
    main(["fit", "--config", str(tiny_config("vocos.yaml", tmp, max_steps=2, trainer={"num_sanity_val_steps": 0}))])
    yield last_checkpoint(tmp)
    shutil.rmtree(tmp)  # 0.5 GB that pytest would keep until the session ends


def test_export_writes_the_hub_layout_that_loads_strictly_and_decodes_as_the_generator(trained: Path,
                                                                                      tmp_path: Path) -> None:
    out = tmp_path / "exported"
    main(["export", str(trained), str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    config = yaml.safe_load((out / CONFIG_NAME).read_text(encoding="utf-8"))
    assert list(config) == ["feature_extractor", "backbone", "head"]
    assert config["backbone"]["class_path"] == "vocos.models.VocosBackbone"
    state = torch.load(out / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    assert not [k for k in state if k.startswith(("multiperioddisc", "multiresddisc", "melspec_loss"))]
    model = Vocos.from_pretrained(out)  # strict: every key, shapes, buffers
    module = VocosExp.load_from_checkpoint(trained, map_location="cpu").eval()
    audio = torch.randn(2, 8192, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.no_grad():
        expected = module(audio)
    torch.testing.assert_close(model(audio), expected, rtol=1e-5, atol=1e-5)
    mel = model.audio_to_features(audio)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(mel), module.head(module.backbone(mel)), rtol=1e-5, atol=1e-5)


class _Touch:
    """A pickle that creates a file when unpickled: what a crafted checkpoint could do with any code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize(("content", "message"), [
    # an exported model's weights or folder, which a user resuming or exporting plausibly passes: told what is expected
    ({"backbone.embed.weight": torch.zeros(1)}, r"not a Lightning checkpoint .*expected a \.ckpt file written by "
                                                r"vocos-train fit .*is for --init-from DIR$"),
    ("dir", r"weights.bin: is a directory; expected a \.ckpt file .*is for --init-from DIR$"),  # was IsADirectoryError
    (None, "no such file"),
    (b"not a checkpoint at all", "cannot be read as a checkpoint"),
    ("code", "cannot be read as a checkpoint"),
])
def test_export_of_a_file_that_is_not_a_lightning_checkpoint_fails_in_one_line(tmp_path: Path, content: Any,
                                                                                message: str) -> None:
    bogus, marker = tmp_path / "weights.bin", tmp_path / "ran"
    if isinstance(content, bytes):
        bogus.write_bytes(content)
    elif content == "dir":
        bogus.mkdir()
    elif content == "code":
        torch.save({"state_dict": {}, "hyper_parameters": _Touch(marker)}, bogus)
    elif content is not None:
        torch.save(content, bogus)
    with pytest.raises(SystemExit, match=f"^vocos-train export: .*{message}") as stopped:
        main(["export", str(bogus), str(tmp_path / "out")])
    assert not marker.exists()  # the checkpoint is read as data: nothing in it runs
    for advice in ("weights_only", "can still be loaded", "torch.save your checkpoint"):  # torch's, misleading here
        assert advice not in str(stopped.value), stopped.value


@pytest.mark.parametrize(("out", "problem"), [("train.txt", "is a file"), ("train.txt/model", "train.txt is a file")])
def test_export_to_a_path_that_cannot_be_a_directory_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       out: str, problem: str) -> None:
    """It printed the OS's error alone: "vocos-train export: [Errno 17] File exists: 'train.txt'"."""
    monkeypatch.chdir(tmp_path)
    Path("train.txt").write_text("a file list\n", encoding="utf-8")
    model = yaml.safe_load((CONFIGS / "vocos.yaml").read_text(encoding="utf-8"))["model"]
    torch.save({"state_dict": {}, "hyper_parameters": {k: model[k] for k in GENERATOR_PARTS}}, "run.ckpt")
    with pytest.raises(SystemExit) as stopped:
        main(["export", "run.ckpt", out])
    assert str(stopped.value) == (f"vocos-train export: {out}: {problem}; expected a directory to create or an "
                                  "existing, writable directory")
    assert Path("train.txt").read_text(encoding="utf-8") == "a file list\n"
