"""Finding, verifying and strictly loading EnCodec weights (explicit path, env var, torch hub cache)."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from pathlib import Path

import pytest
import torch

import vocos_core.encodec.weights as weights_module
from vocos_core.encodec import load_encodec_encoder
from vocos_core.errors import CheckpointError, UnavailableError

OFFICIAL_NAME = "encodec_24khz-d7cc33bc.th"


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _save_variant(tmp_path: Path, state: dict[str, torch.Tensor], name: str) -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port_url() -> str:
    """An http URL on loopback where nothing listens: connecting fails at once, like being offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/encodec/v0/{OFFICIAL_NAME}"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub dir (via TORCH_HOME), no env override, official URL unreachable."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would override TORCH_HOME
    monkeypatch.delenv("VOCOS_ENCODEC_WEIGHTS", raising=False)
    monkeypatch.setattr(weights_module, "OFFICIAL_URL", _closed_port_url())
    cache = weights_module.official_cache_path()
    assert cache == tmp_path / "torch_home" / "hub" / "checkpoints" / OFFICIAL_NAME
    return cache


# --- explicit paths and strict loading ------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not found.*nope\.th"):
        load_encodec_encoder(tmp_path / "nope.th")


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.th"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match=r"garbage\.th.*not a loadable weights file"):
        load_encodec_encoder(path)


@pytest.mark.parametrize("content", [[1, 2, 3], {"encoder.model.0.conv.conv.bias": 1.0}])
def test_not_a_state_dict(tmp_path: Path, content: object) -> None:
    path = tmp_path / "odd.th"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=r"odd\.th.*expected a state dict mapping parameter names to tensors"):
        load_encodec_encoder(path)


def test_missing_key(tmp_path: Path, random_weights: Path) -> None:
    state = _state(random_weights)
    del state["encoder.model.13.lstm.weight_hh_l1"]
    del state["quantizer.vq.layers.31._codebook.embed_avg"]
    path = _save_variant(tmp_path, state, "missing.th")
    with pytest.raises(CheckpointError, match=r"missing\.th") as info:
        load_encodec_encoder(path)
    assert "encoder.model.13.lstm.weight_hh_l1" in str(info.value)
    assert "quantizer.vq.layers.31._codebook.embed_avg" in str(info.value)


@pytest.mark.parametrize(
    "extra", ["encoder.model.16.conv.conv.bias", "quantizer.vq.layers.32._codebook.embed"]
)
def test_unexpected_key(tmp_path: Path, random_weights: Path, extra: str) -> None:
    state = _state(random_weights)
    state[extra] = torch.zeros(128)
    path = _save_variant(tmp_path, state, "extra.th")
    with pytest.raises(CheckpointError, match=rf"extra\.th.*unexpected keys \[{re.escape(extra)}\]"):
        load_encodec_encoder(path)


def test_wrong_shape(tmp_path: Path, random_weights: Path) -> None:
    state = _state(random_weights)
    state["quantizer.vq.layers.3._codebook.embed"] = torch.zeros(512, 128)
    path = _save_variant(tmp_path, state, "shape.th")
    expected = r"shape\.th.*layers\.3\._codebook\.embed \(512, 128\) \(expected \(1024, 128\)\)"
    with pytest.raises(CheckpointError, match=expected):
        load_encodec_encoder(path)


def test_decoder_keys_are_ignored(tmp_path: Path, random_weights: Path) -> None:
    state = _state(random_weights)
    state["decoder.model.0.conv.conv.bias"] = torch.zeros(512)
    state["decoder.model.1.lstm.weight_ih_l0"] = torch.zeros(2048, 512)
    path = _save_variant(tmp_path, state, "with_decoder.th")
    with_decoder = load_encodec_encoder(path)
    without = load_encodec_encoder(random_weights)
    audio = torch.randn(1, 1600, generator=torch.Generator().manual_seed(0))
    assert torch.equal(with_decoder.encode(audio, 6.0), without.encode(audio, 6.0))


# --- environment variable ---------------------------------------------------------------------------


def test_env_var_is_used_without_hash_check(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch, random_weights: Path
) -> None:
    monkeypatch.setenv("VOCOS_ENCODEC_WEIGHTS", str(random_weights))
    encoder = load_encodec_encoder()
    expected = _state(random_weights)["quantizer.vq.layers.0._codebook.embed"]
    assert torch.equal(encoder.codebook(1), expected)
    assert not hub_cache.exists()


def test_env_var_to_missing_file(hub_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOCOS_ENCODEC_WEIGHTS", str(tmp_path / "absent.th"))
    with pytest.raises(CheckpointError, match=r"absent\.th"):
        load_encodec_encoder()


def test_explicit_path_beats_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, random_weights: Path
) -> None:
    monkeypatch.setenv("VOCOS_ENCODEC_WEIGHTS", str(tmp_path / "absent.th"))
    assert load_encodec_encoder(random_weights).codebook(1).shape == (1024, 128)


# --- official file through the torch hub cache ------------------------------------------------------


def test_offline_without_cache(hub_cache: Path) -> None:
    with pytest.raises(CheckpointError, match="VOCOS_ENCODEC_WEIGHTS") as info:
        load_encodec_encoder()
    assert "\n" not in str(info.value)
    assert "local path" in str(info.value)
    assert not hub_cache.exists()


def test_a_silent_server_fails_the_download_within_its_timeout(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loopback socket that takes the connection (its backlog) and never answers, like a network
    # dropping packets; torch hub's downloader, with no timeout, would wait forever.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setattr(weights_module, "OFFICIAL_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/x.th")
        monkeypatch.setattr(weights_module, "DOWNLOAD_TIMEOUT_S", 0.5)
        outcome: list[BaseException] = []
        worker = threading.Thread(target=_load_into, args=(outcome,), daemon=True)
        worker.start()
        worker.join(timeout=10)
    assert not worker.is_alive(), "the download still waits"
    assert isinstance(outcome[0], UnavailableError) and "timed out" in str(outcome[0])
    assert not hub_cache.exists() and not list(hub_cache.parent.iterdir())


def _load_into(outcome: list[BaseException]) -> None:
    try:
        load_encodec_encoder()
    except BaseException as exc:
        outcome.append(exc)


def test_cached_file_with_wrong_hash(hub_cache: Path, random_weights: Path) -> None:
    hub_cache.parent.mkdir(parents=True)
    hub_cache.write_bytes(random_weights.read_bytes())
    actual = _sha256(hub_cache)[:8]
    with pytest.raises(CheckpointError, match=rf"{re.escape(OFFICIAL_NAME)}.*{actual}.*d7cc33bc"):
        load_encodec_encoder()


def test_downloaded_file_with_wrong_hash_is_not_cached(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch, random_weights: Path, tmp_path: Path
) -> None:
    source = tmp_path / "server" / OFFICIAL_NAME
    source.parent.mkdir()
    source.write_bytes(random_weights.read_bytes())
    monkeypatch.setattr(weights_module, "OFFICIAL_URL", source.as_uri())
    with pytest.raises(CheckpointError, match="d7cc33bc"):
        load_encodec_encoder()
    assert not hub_cache.exists()


def test_download_then_cache_then_reverify(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch, random_weights: Path, tmp_path: Path
) -> None:
    # Pretend the random file is the official one by expecting its own hash prefix.
    source = tmp_path / "server" / OFFICIAL_NAME
    source.parent.mkdir()
    source.write_bytes(random_weights.read_bytes())
    monkeypatch.setattr(weights_module, "OFFICIAL_URL", source.as_uri())
    monkeypatch.setattr(weights_module, "OFFICIAL_SHA256_PREFIX", _sha256(source)[:8])
    expected = _state(random_weights)["quantizer.vq.layers.0._codebook.embed"]

    assert torch.equal(load_encodec_encoder().codebook(1), expected)
    assert hub_cache.read_bytes() == source.read_bytes()

    source.unlink()  # a second load must come from the cache, not the network
    assert torch.equal(load_encodec_encoder().codebook(1), expected)

    with hub_cache.open("ab") as f:  # a corrupted cache entry is caught on the next load
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="sha256"):
        load_encodec_encoder()
