"""scripts/ab_revisions.py loads a revision's vocos_core beside the working tree's."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_a_revision_loads_as_its_own_package(tmp_path: Path) -> None:
    root = SCRIPTS.parent
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    sys.path.insert(0, str(SCRIPTS))
    try:
        ab = importlib.import_module("ab_revisions")
        module = ab.load_revision("HEAD", tmp_path)
    finally:
        sys.path.remove(str(SCRIPTS))
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
    import vocos_core

    assert Path(module.__file__).is_relative_to(tmp_path)
    assert module.Vocos is not vocos_core.Vocos
    for name in [n for n in sys.modules if n.split(".")[0] == module.__name__]:
        del sys.modules[name]


def test_the_streams_case_decodes_each_stream_as_the_offline_decode(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import vocos_core
    from vocos_core.testing import write_random_checkpoint

    sys.path.insert(0, str(SCRIPTS))
    try:
        ab = importlib.import_module("ab_revisions")
    finally:
        sys.path.remove(str(SCRIPTS))
    monkeypatch.setattr(ab, "STREAMS", 3)
    mel = vocos_core.Vocos.from_pretrained(write_random_checkpoint(tmp_path / "m", "mel", dim=16, num_layers=2))
    frames = torch.randn(100, 57, generator=torch.Generator().manual_seed(1)) - 4
    audio = ab.stream_case(vocos_core, mel, frames)()
    offline = mel.decode(frames[None])[0]
    assert audio.shape == (3 * offline.shape[0],)
    for piece in audio.split(offline.shape[0]):
        assert float((piece - offline).abs().max() / offline.abs().max()) <= 1e-5


def test_a_revision_without_streaming_is_told_apart(tmp_path: Path) -> None:
    """A revision from before vocos_core.streaming (e.g. fc38b15) has no streams case to build."""
    import vocos_core

    sys.path.insert(0, str(SCRIPTS))
    try:
        ab = importlib.import_module("ab_revisions")
    finally:
        sys.path.remove(str(SCRIPTS))
    (tmp_path / "old_vocos_core").mkdir()
    (tmp_path / "old_vocos_core" / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        old = importlib.import_module("old_vocos_core")
        assert not ab.has_streams(old)
    finally:
        sys.path.remove(str(tmp_path))
        del sys.modules["old_vocos_core"]
    assert ab.has_streams(vocos_core)
