"""A server of three named models (the official-layout mel and EnCodec models and a 22.05 kHz HiFi-GAN-mel
model): the model list, decoding and resynthesis through each by name, per-model batching, resampled
answers and metrics by model name."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
import torch
from service_helpers import AppHarness, read_audio, running_app, tone

from service.runtime.audio_io import resampled_length
from service.runtime.models import ServedModel, load_models
from service.settings import Settings
from service.testing import audio_file, npy_bytes
from vocos_core import matmul_ways
from vocos_core.testing import write_random_checkpoint

pytestmark = pytest.mark.asyncio
NPY = {"content-type": "application/x-npy"}
WAV = {"content-type": "audio/wav"}


@pytest.fixture(scope="module")
def three_models(tmp_path_factory: pytest.TempPathFactory, mel_checkpoint: Path, encodec_checkpoint: Path,
                 encodec_weights: Path) -> tuple[Settings, dict[str, ServedModel]]:
    hifigan = write_random_checkpoint(tmp_path_factory.mktemp("tts22k"), "hifigan-mel")
    models_file = tmp_path_factory.mktemp("registry") / "models.yaml"
    models_file.write_text(f"models:\n  tts22k:\n    source: {hifigan}\n    max_batch_size: 3\n    max_queue_size: 5\n")
    settings = Settings(models=f"mel={mel_checkpoint},encodec={encodec_checkpoint}", models_file=str(models_file),
                        encodec_weights=str(encodec_weights), device="cpu", max_wait_ms=2)
    return settings, load_models(settings)


@pytest_asyncio.fixture
async def app(three_models: tuple[Settings, dict[str, ServedModel]]) -> AsyncIterator[AppHarness]:
    settings, models = three_models
    async with running_app(settings, models) as harness:
        yield harness


async def test_the_model_list_describes_each_front_end_without_paths(
    app: AppHarness, three_models: tuple[Settings, dict[str, ServedModel]]
) -> None:
    response = await app.client.get("/models")
    assert response.status_code == 200
    listed = {m["name"]: m for m in response.json()["models"]}
    assert list(listed) == ["mel", "encodec", "tts22k"]
    assert [listed[n]["kind"] for n in listed] == ["mel", "encodec", "mel"]
    assert [listed[n]["sample_rate"] for n in listed] == [24000, 24000, 22050]
    tts = listed["tts22k"]
    expected = {"type": "hifigan-mel", "n_mels": 80, "f_max": 8000.0, "mel_scale": "slaney", "log_floor": 1e-5}
    assert {key: tts["front_end"][key] for key in expected} == expected
    assert tts["hop_length"] == 256 and tts["n_fft"] == 1024 and tts["parameters"] > 0
    assert listed["mel"]["front_end"]["mel_scale"] == "htk" and listed["mel"]["front_end"]["n_mels"] == 100
    assert listed["encodec"]["front_end"]["codebooks"] == [2, 4, 8, 16]
    assert all(m["source"].startswith("local:") and m["device"] == "cpu" for m in listed.values())
    # How each CPU model's float32 matmuls run: the plan the start-up probe chose for the process.
    assert [listed[n]["cpu_matmul"] for n in listed] == [three_models[1][n].cpu_matmul for n in listed]
    named_ways = {part.split("<=")[0] for part in listed["mel"]["cpu_matmul"].split(",")}  # "onednn<=32,mkl"
    assert named_ways <= set(matmul_ways.available())
    for served in three_models[1].values():
        assert served.source not in response.text


async def test_the_model_list_narrows_to_one_model_by_name(app: AppHarness) -> None:
    """?model= lists that model alone (it listed every model, as if the parameter were not there)."""
    whole = (await app.client.get("/models")).json()["models"]
    one = await app.client.get("/models?model=tts22k")
    assert one.status_code == 200 and one.json()["models"] == [m for m in whole if m["name"] == "tts22k"]
    missing = await app.client.get("/models?model=nope")
    assert missing.status_code == 404 and "served: mel (mel), encodec (encodec), tts22k (mel)" in missing.text
    misspelt = await app.client.get("/models?modle=tts22k")
    assert misspelt.status_code == 422 and "'modle': unknown query parameter of /models" in misspelt.text
    assert (await app.client.head("/models?modle=tts22k")).status_code == 422  # HEAD as its GET


async def test_each_model_decodes_by_name(app: AppHarness, three_models: tuple[Settings, dict[str, ServedModel]]
                                          ) -> None:
    models = three_models[1]
    mel80 = np.random.default_rng(0).standard_normal((80, 40)).astype(np.float32) - 4
    response = await app.client.post("/decode/mel?model=tts22k&format=wav32f", content=npy_bytes(mel80), headers=NPY)
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "tts22k" and response.headers["x-sample-rate"] == "22050"
    audio, rate, _ = read_audio(response.content)
    with torch.inference_mode():
        expected = models["tts22k"].model.decode(torch.from_numpy(mel80)[None])[0].numpy()
    assert rate == 22050 and np.max(np.abs(audio - expected)) <= 1e-5 * max(1e-3, float(np.abs(expected).max()))
    default = await app.client.post("/decode/mel", content=npy_bytes(np.zeros((100, 20), np.float32)), headers=NPY)
    assert default.status_code == 200 and default.headers["x-model"] == "mel"
    codes = await app.client.post("/decode/encodec?model=encodec", json={"codes": [[1, 2, 3]] * 4})
    assert codes.status_code == 200 and codes.headers["x-model"] == "encodec"


async def test_a_wrong_name_or_kind_says_what_is_served(app: AppHarness) -> None:
    body = npy_bytes(np.zeros((100, 20), np.float32))
    missing = await app.client.post("/decode/mel?model=nope", content=body, headers=NPY)
    assert missing.status_code == 404
    assert "served: mel (mel), encodec (encodec), tts22k (mel)" in missing.json()["error"]["message"]
    wrong_kind = await app.client.post("/decode/mel?model=encodec", content=body, headers=NPY)
    assert wrong_kind.status_code == 422 and "needs a model of kind mel" in wrong_kind.json()["error"]["message"]
    # An empty ?model= (a template's unfilled value) was "no model named ''": it names no model at all.
    empty = await app.client.post("/decode/mel?model=", content=body, headers=NPY)
    assert empty.status_code == 422 and empty.json()["error"]["type"] == "invalid_parameter"
    assert empty.json()["error"]["message"].startswith("model: got an empty name; name a served model (mel (mel), ")


@pytest.mark.parametrize(("query", "rate"), [("model=tts22k", 22050), ("model=encodec&bandwidth=6", 24000),
                                             ("", 24000)])
async def test_each_model_resynthesizes_an_upload_to_its_exact_length(app: AppHarness, query: str, rate: int) -> None:
    upload = audio_file(tone(0.7, 16000)[:11111], 16000)
    response = await app.client.post(f"/resynthesize?{query}&format=wav32f", content=upload, headers=WAV)
    assert response.status_code == 200, response.text
    audio, got_rate, _ = read_audio(response.content)
    assert got_rate == rate and audio.size == resampled_length(11111, 16000, rate)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000])
async def test_answers_are_resampled_on_request(app: AppHarness, sample_rate: int) -> None:
    body = npy_bytes(np.random.default_rng(1).standard_normal((100, 50)).astype(np.float32) - 4)
    native = await app.client.post("/decode/mel?format=wav32f", content=body, headers=NPY)
    response = await app.client.post(f"/decode/mel?format=wav32f&sample_rate={sample_rate}", content=body,
                                     headers=NPY)
    assert response.status_code == 200, response.text
    info = sf.info(io.BytesIO(response.content))
    samples = (50 - 1) * 256
    assert info.samplerate == sample_rate and info.frames == resampled_length(samples, 24000, sample_rate)
    assert response.headers["x-sample-rate"] == str(sample_rate)
    assert float(response.headers["x-audio-duration"]) == pytest.approx(info.frames / sample_rate, abs=1e-6)
    assert float(native.headers["x-audio-duration"]) == pytest.approx(samples / 24000, abs=1e-6)
    refused = await app.client.post("/decode/mel?sample_rate=1000", content=body, headers=NPY)
    assert refused.status_code == 422


async def test_each_model_has_its_own_engine_batching_and_metrics(
    app: AppHarness, three_models: tuple[Settings, dict[str, ServedModel]]
) -> None:
    engines = {name: slot.engine for name, slot in app.state.slots.items()}
    assert engines["tts22k"].policy.max_batch_size == 3 and engines["mel"].policy.max_batch_size == 16
    assert engines["tts22k"].policy.max_queue_size == 5 and engines["mel"].policy.max_queue_size == 256
    await app.client.post("/decode/mel?model=tts22k", content=npy_bytes(np.zeros((80, 30), np.float32)), headers=NPY)
    registry = app.state.metrics.registry
    assert registry.get_sample_value("vocos_audio_seconds_total", {"model": "tts22k"}) > 0
    assert registry.get_sample_value("vocos_queue_depth", {"model": "tts22k"}) == 0
    info = {"model": "tts22k", "kind": "mel", "source": "local:tts22k0", "device": "cpu", "dtype": "float32",
            "cpu_matmul": str(three_models[1]["tts22k"].cpu_matmul)}
    assert registry.get_sample_value("vocos_model_info", info) == 1


SPEECH_MELS = Path(__file__).resolve().parents[1] / "data" / "speech_mels" / "speech_mels.npz"


async def test_mels_from_another_front_end_are_warned_about_or_refused(app: AppHarness) -> None:
    speech = next(iter(np.load(SPEECH_MELS).values())).astype(np.float32)  # (100, T), the official front-end
    registry = app.state.metrics.registry
    real = await app.client.post("/decode/mel", content=npy_bytes(speech), headers=NPY)
    assert real.status_code == 200 and "x-input-warning" not in real.headers
    log10 = await app.client.post("/decode/mel", content=npy_bytes(speech / np.log(10)), headers=NPY)
    assert log10.status_code == 200 and log10.headers["x-input-warning"].startswith("log10:")
    decibels = 20 * speech / np.log(10)  # 20 log10 of the magnitude: far below this front-end's floor
    refused = await app.client.post("/decode/mel", content=npy_bytes(decibels), headers=NPY)
    assert refused.status_code == 422 and "log floor" in refused.json()["error"]["message"]
    assert registry.get_sample_value("vocos_input_warnings_total", {"model": "mel", "cause": "log10"}) == 1
    assert registry.get_sample_value("vocos_input_warnings_total", {"model": "mel", "cause": "db_scaled"}) == 1


async def test_the_models_file_is_read_once_when_the_models_load(
    three_models: tuple[Settings, dict[str, ServedModel]]
) -> None:
    """The engines take the batching options of the specs the models were loaded from: the file was read again
    at the engines' start, so one removed (or edited) while the models loaded failed the start (or gave a model
    other options)."""
    settings, models = three_models
    path = Path(settings.models_file)
    text = path.read_text()
    path.unlink()
    try:
        async with running_app(settings, models) as harness:
            assert harness.state.slots["tts22k"].engine.policy.max_batch_size == 3
            assert harness.state.slots["tts22k"].features.max_waiting == 5
    finally:
        path.write_text(text)
