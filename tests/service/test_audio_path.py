"""The EnCodec model's audio-in path without the EnCodec weights: the server starts and serves the rest,
/resynthesize?model=encodec answers 503 until the weights are present, and loads them then, no restart."""

from __future__ import annotations

import logging
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from service_helpers import running_app, settings_with, tone, wait_until

import service.runtime.audio_path as audio_path_module
import vocos_core.encodec.weights as weights_module
from service.engine.torch_thread import run_in_torch_thread
from service.runtime.models import ServedModel, load_models
from service.settings import Settings
from service.testing import audio_file

pytestmark = pytest.mark.asyncio

WAV = {"content-type": "audio/wav"}
CODES = {"codes": np.zeros((2, 10), dtype=np.int64).tolist()}


def encodec_only(base_settings: Settings, weights: str | None) -> Settings:
    return settings_with(base_settings, mel_model="none", encodec_weights=weights)


def count_attempts(served: ServedModel) -> list[float]:
    """Record each attempt to load the audio path (its time), still running the real load."""
    attempts: list[float] = []
    load = served.audio_path.load

    def counted() -> bool:
        attempts.append(1.0)
        return load()

    served.audio_path.load = counted  # type: ignore[method-assign]
    return attempts


async def test_starts_without_the_weights_then_loads_them_when_they_appear(
    base_settings: Settings, encodec_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    later = tmp_path / "weights" / "encodec_24khz-d7cc33bc.th"
    settings = encodec_only(base_settings, str(later))
    with caplog.at_level(logging.WARNING):
        models = load_models(settings)  # no StartupError
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "VOCOS_ENCODEC_WEIGHTS" in warnings[0], warnings
    assert "/resynthesize?model=encodec" in warnings[0] and "unavailable until" in warnings[0]
    attempts = count_attempts(models["encodec"])
    body = audio_file(tone(0.5, 24000), 24000)
    async with running_app(settings, models) as app:  # ready: warm-up skipped the audio path
        assert (await app.client.get("/readyz")).status_code == 200
        assert (await app.client.post("/decode/encodec", json=CODES)).status_code == 200
        refused = await app.client.post("/resynthesize?model=encodec&bandwidth_id=0", content=body, headers=WAV)
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["type"] == "audio_path_unavailable"
        assert "encodec_24khz-d7cc33bc.th" in error["message"] and "VOCOS_ENCODEC_WEIGHTS" in error["message"]
        assert str(tmp_path) not in refused.text and refused.headers["retry-after"] == "5"
        assert len(attempts) == 0  # tried at start a moment ago; the file is still missing

        later.parent.mkdir()
        shutil.copy(encodec_weights, later)  # an init container puts the weights in place
        served = await app.client.post("/resynthesize?model=encodec&bandwidth_id=0", content=body, headers=WAV)
        assert served.status_code == 200, served.text
        assert len(attempts) == 1
        again = await app.client.post("/resynthesize?model=encodec&bandwidth_id=0", content=body, headers=WAV)
        assert again.status_code == 200 and len(attempts) == 1


async def test_a_named_models_messages_name_it_and_the_setting_that_comes_first(
    base_settings: Settings, encodec_checkpoint: Path, encodec_weights: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    models_file = tmp_path / "models.yaml"
    models_file.write_text(f"models:\n  codec: {{source: {encodec_checkpoint}, "
                           f"encodec_weights: {tmp_path / 'missing.th'}}}\n")
    # the server's setting holds good weights, but the model's own option comes first
    settings = settings_with(base_settings, mel_model="none", encodec_model="none", models_file=str(models_file),
                             encodec_weights=str(encodec_weights))
    with caplog.at_level(logging.WARNING):
        models = load_models(settings)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "model 'codec' (/resynthesize?model=codec)" in warning
    assert "the model's encodec_weights option in VOCOS_MODELS_FILE, else VOCOS_ENCODEC_WEIGHTS" in warning
    body = audio_file(tone(0.5, 24000), 24000)
    async with running_app(settings, models) as app:
        refused = await app.client.post("/resynthesize?model=codec&bandwidth_id=0", content=body, headers=WAV)
        message = refused.json()["error"]["message"]
        assert refused.status_code == 503 and "/resynthesize?model=codec is unavailable" in message
        assert "encodec_weights option in VOCOS_MODELS_FILE" in message and "/decode/encodec?model=codec" in message


async def test_retries_at_most_once_per_interval_while_the_weights_stay_missing(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = encodec_only(base_settings, str(tmp_path / "never.th"))
    models = load_models(settings)
    attempts = count_attempts(models["encodec"])
    clock = [time.monotonic()]  # the attempt at start was at about this time
    monkeypatch.setattr(audio_path_module, "_now", lambda: clock[0])
    body = audio_file(tone(0.2, 24000), 24000)
    async with running_app(settings, models) as app:
        for step in range(8):  # 8 requests over 8 s: an attempt 5 s after the one at start, no other
            clock[0] += 1.0
            response = await app.client.post("/resynthesize?model=encodec&bandwidth=1.5", content=body,
                                              headers=WAV)
            assert response.status_code == 503, (step, response.text)
        # No file to read: the attempt runs in the model thread while requests go on, so it may not have
        # started yet. The thread runs its calls in order: once a call queued after it returns, it is done.
        await run_in_torch_thread(lambda: None)
    assert len(attempts) == 1


async def test_unreachable_official_url_fails_fast_and_the_server_starts(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on: refused at once, like offline
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(weights_module, "OFFICIAL_URL", f"http://127.0.0.1:{port}/encodec_24khz-d7cc33bc.th")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    settings = encodec_only(base_settings, None)
    with caplog.at_level(logging.WARNING):
        models = load_models(settings)
    assert not models["encodec"].audio_path.available
    assert "cannot download EnCodec weights" in (models["encodec"].audio_path.problem or "")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.count("VOCOS_ENCODEC_WEIGHTS") == 1, warning  # the server's advice, not vocos_core's as well
    async with running_app(settings, models) as app:
        assert (await app.client.post("/decode/encodec", json=CODES)).status_code == 200


async def test_a_download_in_progress_does_not_hold_requests(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as silent:  # takes connections and never answers, like a network dropping them
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setattr(weights_module, "OFFICIAL_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/w.th")
        monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
        monkeypatch.setattr(weights_module, "DOWNLOAD_TIMEOUT_S", 0.2)
        settings = encodec_only(base_settings, None)
        models = load_models(settings)
        assert "timed out" in (models["encodec"].audio_path.problem or "")
        attempts = count_attempts(models["encodec"])
        monkeypatch.setattr(weights_module, "DOWNLOAD_TIMEOUT_S", 2.0)
        monkeypatch.setattr(audio_path_module, "RETRY_INTERVAL_S", 0.0)
        body = audio_file(tone(0.2, 24000), 24000)
        async with running_app(settings, models) as app:
            started = time.monotonic()
            response = await app.client.post("/resynthesize?model=encodec&bandwidth_id=0", content=body,
                                              headers=WAV)
            assert response.status_code == 503 and time.monotonic() - started < 1.0
            await wait_until(lambda: len(attempts) == 1)  # the download goes on in the background
            again = await app.client.post("/resynthesize?model=encodec&bandwidth_id=0", content=body, headers=WAV)
            assert again.status_code == 503 and len(attempts) == 1  # one attempt at a time


async def test_a_load_that_fails_unexpectedly_is_503_not_500(
    base_settings: Settings,
    encodec_weights: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A load failing with other than a checkpoint or file error (CUDA out of memory while moving the encoder
    to the GPU, MemoryError) reached the request waiting on it: a 500, where the path is as unavailable as
    with no file, and later requests got the 503 with Retry-After."""
    later = tmp_path / "encodec_24khz-d7cc33bc.th"
    settings = encodec_only(base_settings, str(later))
    models = load_models(settings)
    features = models["encodec"].audio_path._features

    def out_of_memory() -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(features, "encoder", out_of_memory)
    shutil.copy(encodec_weights, later)  # the file appeared: an attempt is due, and waited for
    body = audio_file(tone(0.2, 24000), 24000)
    async with running_app(settings, models) as app:
        with caplog.at_level(logging.ERROR):
            response = await app.client.post("/resynthesize?model=encodec&bandwidth_id=0", content=body, headers=WAV)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "audio_path_unavailable"
        assert response.headers["retry-after"] == "5"
    assert "CUDA out of memory" in (models["encodec"].audio_path.problem or "")
    assert any("loading the EnCodec audio-in path failed" in r.getMessage() for r in caplog.records)
