"""scripts/make_speech_corpus.py's file lists, with the speech engines stood in for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scripts_helpers import import_script


def test_an_empty_split_is_an_empty_file_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    corpus = import_script("make_speech_corpus")
    monkeypatch.setattr(corpus, "available_voices", lambda: [("espeak", "en-us")])
    monkeypatch.setattr(corpus, "render", lambda engine, voice, text, out, rate: out.write_bytes(b""))
    monkeypatch.setattr(sys, "argv", ["make_speech_corpus.py", str(tmp_path), "--train", "0", "--val", "2"])
    corpus.main()
    assert (tmp_path / "filelist.train").read_text() == ""  # was "\n": one empty path
    val = (tmp_path / "filelist.val").read_text().splitlines()
    assert len(val) == 2 and all(Path(p).is_absolute() and Path(p).exists() for p in val)
