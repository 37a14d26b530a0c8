"""Loading checkpoints: local directories, the Hub cache, strict key checks, clear errors."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from vocos_core import CheckpointError, UnavailableError, Vocos
from vocos_core.checkpoint import CONFIG_NAME, WEIGHTS_NAME

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
MEL = REFERENCE / "vocos-mel-tiny"


def copy_checkpoint(tmp_path: Path, source: Path = MEL) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(source, target)
    return target


def edit_weights(ckpt: Path, edit) -> None:  # type: ignore[no-untyped-def]
    state = torch.load(ckpt / WEIGHTS_NAME, weights_only=True)
    edit(state)
    torch.save(state, ckpt / WEIGHTS_NAME)


def fake_hub_cache(cache: Path, repo_id: str, revision: str, commit: str, source: Path) -> None:
    """The layout huggingface_hub writes: refs/<revision> -> snapshots/<commit>/<files>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)


def test_hub_id_resolves_through_the_huggingface_hub_cache(tmp_path: Path) -> None:
    fake_hub_cache(tmp_path, "charactr/vocos-mel-24khz", "main", "a" * 40, MEL)
    fake_hub_cache(tmp_path, "charactr/vocos-mel-24khz", "v2", "b" * 40, REFERENCE / "vocos-mel-tiny-same")
    main = Vocos.from_pretrained("charactr/vocos-mel-24khz", cache_dir=tmp_path, local_files_only=True)
    assert main.config.head.padding == "center"  # type: ignore[union-attr]
    v2 = Vocos.from_pretrained("charactr/vocos-mel-24khz", revision="v2", cache_dir=tmp_path,
                               local_files_only=True)
    assert v2.config.head.padding == "same"  # type: ignore[union-attr]


def test_unreachable_hub_says_how_to_use_a_local_directory(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match=r"cannot obtain config.yaml of 'charactr/vocos-mel-24khz'.*"
                                               r"no directory of that name here, so a Hub repo.*"
                                               r"not in the local Hub cache.*pass a local directory") as info:
        Vocos.from_pretrained("charactr/vocos-mel-24khz", cache_dir=tmp_path, local_files_only=True)
    assert "local directory" not in info.value.reason


class _DownHub(http.server.BaseHTTPRequestHandler):
    """A Hub that answers every request 503, as an overloaded one does; counts what it is asked."""

    requests: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        self.requests.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.do_HEAD()

    def log_message(self, *args: object) -> None:
        pass


def test_a_hub_that_is_down_is_asked_once_not_retried(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DownHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOCOS_", "HF_"))}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path)}
    code = "from vocos_core import Vocos; Vocos.from_pretrained('charactr/vocos-mel-24khz')"
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert time.monotonic() - started < 10, result.stderr
    assert "UnavailableError" in result.stderr and "answered HTTP 503" in result.stderr
    files = [r for r in _DownHub.requests if "/resolve/" in r]  # (not its own side requests, /api/...)
    assert files == ["HEAD /charactr/vocos-mel-24khz/resolve/main/config.yaml"]


def test_missing_files_are_named(tmp_path: Path) -> None:
    ckpt = copy_checkpoint(tmp_path)
    (ckpt / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"{ckpt / WEIGHTS_NAME}: missing")):
        Vocos.from_pretrained(ckpt)
    (ckpt / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"config\.yaml: missing"):
        Vocos.from_pretrained(ckpt)
    with pytest.raises(CheckpointError, match="neither a checkpoint directory nor a Hub repo id"):
        Vocos.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "last.ckpt").write_bytes(b"PK")
    with pytest.raises(CheckpointError, match=r"is a file; expected a checkpoint directory .*vocos-train export"):
        Vocos.from_pretrained(tmp_path / "last.ckpt")  # a training run's checkpoint, not an exported directory


def test_a_config_whose_model_cannot_be_allocated_is_a_checkpoint_error(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = copy_checkpoint(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:  # what torch raises for an n_fft of 10**8 at dim 512
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Vocos, "__init__", refuse)
    with pytest.raises(CheckpointError, match=r"config\.yaml: a model of this config cannot be built here \(.*can't "
                                              r"allocate memory\); are its sizes what was meant\?"):
        Vocos.from_pretrained(ckpt)


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    ckpt = copy_checkpoint(tmp_path)
    edit_weights(ckpt, lambda s: s.pop("backbone.convnext.1.gamma"))
    with pytest.raises(CheckpointError, match=r"missing keys \[backbone.convnext.1.gamma\]"):
        Vocos.from_pretrained(ckpt)
    ckpt2 = copy_checkpoint(tmp_path / "b")
    edit_weights(ckpt2, lambda s: s.update({"backbone.extra": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \[backbone.extra\]"):
        Vocos.from_pretrained(ckpt2)


def test_shape_mismatch_names_key_and_shapes(tmp_path: Path) -> None:
    ckpt = copy_checkpoint(tmp_path)
    edit_weights(ckpt, lambda s: s.update({"head.out.bias": torch.zeros(5)}))
    with pytest.raises(CheckpointError, match=r"head.out.bias has shape \(5,\), config.yaml implies \(1026,\)"):
        Vocos.from_pretrained(ckpt)


def test_buffer_inconsistent_with_config_is_refused(tmp_path: Path) -> None:
    ckpt = copy_checkpoint(tmp_path)
    edit_weights(ckpt, lambda s: s["feature_extractor.mel_spec.mel_scale.fb"].mul_(2))
    with pytest.raises(CheckpointError, match=r"buffer feature_extractor\.mel_spec\.mel_scale\.fb differs"):
        Vocos.from_pretrained(ckpt)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    ckpt = copy_checkpoint(tmp_path)
    edit_weights(ckpt, lambda s: s["backbone.embed.bias"].fill_(float("nan")))
    with pytest.raises(CheckpointError, match=r"backbone\.embed\.bias holds NaN or Inf"):
        Vocos.from_pretrained(ckpt)


class Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("unpickled!",))


def test_pickled_objects_are_never_loaded(tmp_path: Path) -> None:
    ckpt = copy_checkpoint(tmp_path)
    torch.save({"x": Payload()}, ckpt / WEIGHTS_NAME)
    refusal = r"not a loadable weights file .*Unsupported global: GLOBAL .*print\)"  # what was refused, not more
    with pytest.raises(CheckpointError, match=refusal) as refused:
        Vocos.from_pretrained(ckpt)
    (ckpt / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a loadable weights file") as garbage:
        Vocos.from_pretrained(ckpt)
    for error in (refused.value, garbage.value):  # one line, without torch's advice to load it unsafely
        assert "weights_only" not in str(error) and "\n" not in str(error), error
    torch.save([torch.zeros(1)], ckpt / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        Vocos.from_pretrained(ckpt)


def test_official_encodec_file_needs_no_encodec_weights(tmp_path: Path) -> None:
    # Decoding codes works with no EnCodec weights reachable at all.
    model = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny", encodec_weights=tmp_path / "absent.th")
    assert model.feature_extractor._encoder is None  # type: ignore[union-attr]
    codes = torch.randint(0, 1024, (8, 1, 12))
    audio = model.decode(model.codes_to_features(codes), bandwidth_id=torch.tensor([2]))
    assert audio.shape == (1, 12 * 320)
    assert model.feature_extractor._encoder is None  # type: ignore[union-attr]
    with pytest.raises(CheckpointError):
        model(torch.randn(1, 3200), bandwidth_id=torch.tensor([2]))


def test_loaded_encoder_stays_out_of_the_state_dict(shared_encodec_weights: Path) -> None:
    model = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny", encodec_weights=shared_encodec_weights)
    keys = set(model.state_dict())
    model(torch.randn(1, 3200), bandwidth_id=torch.tensor([1]))
    assert model.feature_extractor._encoder is not None  # type: ignore[union-attr]
    assert set(model.state_dict()) == keys
