"""The decode endpoints through the ASGI app: JSON and .npy bodies, audio files, output formats,
headers, OpenAPI, and exactness of batched requests against solo decoding."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import numpy as np
import pytest
import torch
from service_helpers import AppFactory, AppHarness, GatedModel, read_audio, tone, wait_until

from service.runtime.audio_io import OutputFormat, decode_audio, encode_audio, fit_length
from service.runtime.models import ServedModel
from service.testing import audio_file, npy_bytes

pytestmark = pytest.mark.asyncio
WAV = {"content-type": "audio/wav"}


def solo_decode(served: ServedModel, features: torch.Tensor, bandwidth_id: int | None = None) -> np.ndarray:
    """What the model gives for this input alone: ``decode`` of a batch of one."""
    ids = None if bandwidth_id is None else torch.tensor([bandwidth_id])
    return served.model.decode(features[None], bandwidth_id=ids)[0].float().numpy()


async def test_mel_json_returns_pcm16_wav_with_headers(app: AppHarness, models: dict[str, ServedModel]) -> None:
    mel = np.random.default_rng(1).standard_normal((100, 40)).astype(np.float32)
    response = await app.client.post("/decode/mel", json={"mel": mel.tolist()})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    audio, rate, subtype = read_audio(response.content)
    assert (rate, subtype, audio.shape) == (24000, "PCM_16", (models["mel"].num_samples(40),))
    assert float(response.headers["x-audio-duration"]) == pytest.approx(audio.size / 24000, abs=1e-6)
    assert response.headers["x-model"] == "mel"
    assert len(response.headers["x-request-id"]) >= 8
    np.testing.assert_allclose(audio, solo_decode(models["mel"], torch.from_numpy(mel)), atol=1 / 32767 + 1e-6)


async def test_a_json_mel_of_whole_numbers_is_a_mel(app: AppHarness, models: dict[str, ServedModel]) -> None:
    """JSON has one kind of number: JavaScript's JSON.stringify writes -4.0 as -4."""
    mel = np.random.default_rng(3).integers(-8, 2, (100, 12))
    body = b'{"mel": ' + str(mel.tolist()).encode() + b"}"  # no decimal points anywhere
    response = await app.client.post("/decode/mel?format=wav32f", content=body,
                                     headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    audio, _, _ = read_audio(response.content)
    expected = solo_decode(models["mel"], torch.from_numpy(mel.astype(np.float32)))
    np.testing.assert_allclose(audio, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()))


async def test_mel_npy_float32_output_is_the_model_output(app: AppHarness, models: dict[str, ServedModel]) -> None:
    mel = np.random.default_rng(2).standard_normal((100, 33)).astype(np.float32)
    response = await app.client.post(
        "/decode/mel?format=wav32f", content=npy_bytes(mel), headers={"content-type": "application/x-npy"}
    )
    assert response.status_code == 200, response.text
    audio, _, subtype = read_audio(response.content)
    assert subtype == "FLOAT"
    np.testing.assert_allclose(audio, solo_decode(models["mel"], torch.from_numpy(mel)), rtol=0, atol=1e-6)


async def test_flac_on_request_and_via_accept(app: AppHarness) -> None:
    body = {"mel": np.zeros((100, 10)).tolist()}
    by_query = await app.client.post("/decode/mel?format=flac", json=body)
    by_accept = await app.client.post("/decode/mel", json=body, headers={"accept": "audio/flac"})
    for response in (by_query, by_accept):
        assert response.status_code == 200 and response.headers["content-type"] == "audio/flac"
        assert response.content[:4] == b"fLaC"


async def test_client_request_id_is_echoed(app: AppHarness) -> None:
    response = await app.client.post("/decode/mel", json={"mel": np.zeros((100, 4)).tolist()},
                                     headers={"x-request-id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"


@pytest.mark.parametrize(("k", "bandwidth_id"), [(2, 0), (4, 1), (8, 2), (16, 3)])
async def test_encodec_bandwidth_inferred_from_k(
    app: AppHarness, models: dict[str, ServedModel], k: int, bandwidth_id: int
) -> None:
    codes = np.random.default_rng(k).integers(0, 1024, (k, 30))
    response = await app.client.post("/decode/encodec?format=wav32f", json={"codes": codes.tolist()})
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "encodec"
    served = models["encodec"]
    expected = solo_decode(served, served.model.codes_to_features(torch.from_numpy(codes))[0], bandwidth_id)
    np.testing.assert_allclose(read_audio(response.content)[0], expected, rtol=0, atol=1e-6)


async def test_encodec_explicit_bandwidth_in_query_json_or_kbps(app: AppHarness) -> None:
    codes = np.random.default_rng(0).integers(0, 1024, (8, 12))
    calls = [
        app.client.post("/decode/encodec?bandwidth_id=2", content=npy_bytes(codes),
                        headers={"content-type": "application/x-npy"}),
        app.client.post("/decode/encodec?bandwidth=6", json={"codes": codes.tolist()}),
        app.client.post("/decode/encodec", json={"codes": codes.tolist(), "bandwidth_id": 2}),
        app.client.post("/decode/encodec", json={"codes": codes.tolist(), "bandwidth": 6.0}),
    ]
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 4
    assert len({r.content for r in responses}) == 1


async def test_encodec_codes_as_encode_returns_them_or_as_json_floats(app: AppHarness) -> None:
    """(1, K, T) is EnCodec's ``encode`` output; 5.0 is JSON's 5 (Python's json writes float codes so)."""
    codes = np.random.default_rng(0).integers(0, 1024, (8, 12))
    npy = {"content-type": "application/x-npy"}
    responses = await asyncio.gather(
        app.client.post("/decode/encodec", content=npy_bytes(codes), headers=npy),
        app.client.post("/decode/encodec", content=npy_bytes(codes[None]), headers=npy),
        app.client.post("/decode/encodec", json={"codes": codes.astype(float).tolist()}),
    )
    assert [r.status_code for r in responses] == [200] * 3, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1


@pytest.mark.parametrize("query", ["", "?bandwidth=6"])
async def test_encodec_codes_of_a_higher_bandwidth_are_told_which_rows_to_send(app: AppHarness, query: str) -> None:
    """EnCodec at 24 kbps gives 32 codebooks, which no explicit bandwidth makes decodable; its quantizer is
    residual, so the answer names the rows that are the codes at a bandwidth the model takes."""
    codes = np.random.default_rng(0).integers(0, 1024, (32, 12))
    response = await app.client.post(f"/decode/encodec{query}", json={"codes": codes.tolist()})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "or an explicit bandwidth" not in message
    assert f"send codes[:{16 if query == '' else 8}]" in message


async def test_encodec_codes_fewer_than_the_bandwidth_takes_get_no_slicing_advice(app: AppHarness) -> None:
    codes = np.random.default_rng(0).integers(0, 1024, (4, 12))
    response = await app.client.post("/decode/encodec?bandwidth=6", json={"codes": codes.tolist()})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "bandwidth 6 kbps (id 2) expects 8 codebooks, got K=4"


async def test_encodec_batch_of_several_items_is_named_as_a_batch(app: AppHarness) -> None:
    """EnCodec's ``encode`` gives (B, K, T); a grid of B > 1 items is one request per item."""
    codes = np.random.default_rng(0).integers(0, 1024, (2, 8, 12))
    response = await app.client.post("/decode/encodec", content=npy_bytes(codes),
                                     headers={"content-type": "application/x-npy"})
    assert response.status_code == 422
    assert "a batch of several items" in response.json()["error"]["message"]
    single = await app.client.post("/decode/encodec", content=npy_bytes(codes[None, 0]),
                                   headers={"content-type": "application/x-npy"})
    assert single.status_code == 200, single.text


@pytest.mark.parametrize(("rate", "channels", "container"), [(24000, 1, "WAV"), (44100, 2, "FLAC"),
                                                              (16000, 1, "OGG"), (48000, 2, "MP3")])
async def test_resynthesize_mel(app: AppHarness, rate: int, channels: int, container: str) -> None:
    body = audio_file(tone(0.5, rate, channels), rate, container)
    mime = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg"}[container]
    response = await app.client.post("/resynthesize", content=body, headers={"content-type": mime})
    assert response.status_code == 200, response.text
    audio, out_rate, _ = read_audio(response.content)
    assert out_rate == 24000 and response.headers["x-model"] == "mel"
    assert abs(audio.size - 12000) <= 2048  # about 0.5 s (lossy codecs pad a little)


async def test_resynthesize_mel_equals_model_copy_synthesis(app: AppHarness, models: dict[str, ServedModel]) -> None:
    samples = tone(0.4, 24000)
    response = await app.client.post("/resynthesize?format=wav32f", content=audio_file(samples, 24000, "WAV", "FLOAT"),
                                     headers={"content-type": "audio/wav"})
    assert response.status_code == 200, response.text
    expected = fit_length(models["mel"].model(torch.from_numpy(samples)[None])[0].numpy(), samples.size)
    np.testing.assert_allclose(read_audio(response.content)[0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("query", ["bandwidth_id=1", "bandwidth=3"])
async def test_resynthesize_encodec(app: AppHarness, models: dict[str, ServedModel], query: str) -> None:
    samples = tone(0.3, 24000)
    response = await app.client.post(f"/resynthesize?model=encodec&{query}&format=wav32f",
                                     content=audio_file(samples, 24000, "WAV", "FLOAT"),
                                     headers={"content-type": "audio/wav"})
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "encodec"
    decoded = models["encodec"].model(torch.from_numpy(samples)[None], bandwidth_id=1)[0].numpy()
    np.testing.assert_allclose(read_audio(response.content)[0], fit_length(decoded, samples.size), rtol=0, atol=1e-5)


@pytest.mark.parametrize("query", ["model=mel", "model=encodec&bandwidth_id=0"])
@pytest.mark.parametrize(("rate", "frames"), [(8000, 5001), (16000, 7777), (22050, 14643), (44100, 29283),
                                              (48000, 31873), (24000, 9601)])
async def test_resynthesis_lasts_exactly_as_long_as_the_upload(
    app: AppHarness, models: dict[str, ServedModel], query: str, rate: int, frames: int
) -> None:
    body = audio_file(tone(1.0, rate)[:frames], rate)
    response = await app.client.post(f"/resynthesize?{query}&format=wav32f", content=body, headers=WAV)
    assert response.status_code == 200, response.text
    audio = read_audio(response.content)[0]
    expected = int(Fraction(frames * 24000, rate) + Fraction(1, 2))  # round(frames * 24000 / rate), halves up
    assert audio.size == expected, (audio.size, expected)
    assert float(response.headers["x-audio-duration"]) == pytest.approx(frames / rate, abs=1 / 24000)
    served = models[query.split("&")[0].removeprefix("model=")]
    upload = torch.from_numpy(decode_audio(body, 24000, 60.0).samples)
    features = served.model.audio_to_features(upload, 0 if served.bandwidths else None)[0]  # (1, C, T) -> (C, T)
    decoded = served.decode_batch([features], [0] if served.bandwidths else None)[0].numpy()
    assert decoded.size != expected  # the vocoder's own length is whole hops: fitted, not by chance
    np.testing.assert_allclose(audio, fit_length(decoded, expected), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["wav32f", "wav16"])
async def test_concurrent_unequal_requests_are_batched_and_exact(
    make_app: AppFactory, models: dict[str, ServedModel], fmt: str
) -> None:
    """Requests held at the gate pile up, run as one batch, and each equals its solo decode: to 1e-5
    of the peak as floats, to one least significant bit as 16-bit PCM (a float a hair from a rounding
    boundary can round the other way)."""
    gated = GatedModel(models["mel"])
    rng = np.random.default_rng(7)
    lengths = [23, 57, 31, 64, 40, 33, 48, 61]
    mels = [rng.standard_normal((100, t)).astype(np.float32) for t in lengths]
    async with make_app(models_override={"mel": gated}, max_wait_ms=1, bucket_ratio=4.0) as harness:
        gated.calls.clear()
        gated.entered.clear()
        gated.gate.clear()
        blocker = asyncio.ensure_future(harness.client.post("/decode/mel", json={"mel": mels[0].tolist()}))
        await wait_until(gated.entered.is_set)
        rest = [asyncio.ensure_future(harness.client.post(
            f"/decode/mel?format={fmt}", content=npy_bytes(m), headers={"content-type": "application/x-npy"}))
            for m in mels]
        await wait_until(lambda: harness.state.slots["mel"].engine.queue_depth == len(mels))
        gated.gate.set()
        responses = await asyncio.gather(*rest)
        await blocker
    assert sorted(gated.calls[1]) == sorted(lengths)  # all eight in one batch behind the blocker
    for mel, response in zip(mels, responses, strict=True):
        assert response.status_code == 200, response.text
        expected = solo_decode(models["mel"], torch.from_numpy(mel))
        got = read_audio(response.content)[0]
        assert got.shape == expected.shape
        if fmt == "wav16":
            solo = read_audio(encode_audio(expected, 24000, OutputFormat.WAV16))[0]
            assert np.max(np.abs(got - solo)) * 32768 <= 1.0  # at most one step of 16-bit PCM
        else:
            assert np.max(np.abs(got - expected)) <= 1e-5 * max(1e-3, float(np.max(np.abs(expected))))


async def test_concurrent_encodec_requests_with_mixed_bandwidths_are_exact(
    app: AppHarness, models: dict[str, ServedModel]
) -> None:
    rng = np.random.default_rng(3)
    grids = [rng.integers(0, 1024, (k, t)) for k, t in [(2, 20), (16, 35), (8, 27), (4, 31)]]
    responses = await asyncio.gather(*(
        app.client.post("/decode/encodec?format=wav32f", json={"codes": g.tolist()}) for g in grids))
    served = models["encodec"]
    for grid, response in zip(grids, responses, strict=True):
        assert response.status_code == 200, response.text
        bandwidth_id = served.codebooks.index(grid.shape[0])
        features = served.model.codes_to_features(torch.from_numpy(grid))[0]
        expected = solo_decode(served, features, bandwidth_id)
        got = read_audio(response.content)[0]
        assert np.max(np.abs(got - expected)) <= 1e-5 * max(1e-3, float(np.max(np.abs(expected))))


async def test_openapi_documents_every_endpoint_and_both_body_types(app: AppHarness) -> None:
    spec = (await app.client.get("/openapi.json")).json()
    for path in ("/decode/mel", "/decode/encodec", "/resynthesize", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    mel_body = spec["paths"]["/decode/mel"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-npy"} <= set(mel_body)
    assert "audio/wav" in spec["paths"]["/resynthesize"]["post"]["requestBody"]["content"]
    assert "audio/wav" in spec["paths"]["/decode/mel"]["post"]["responses"]["200"]["content"]
    params = {p["name"] for p in spec["paths"]["/decode/encodec"]["post"]["parameters"]}
    assert {"bandwidth_id", "bandwidth", "format"} <= params
