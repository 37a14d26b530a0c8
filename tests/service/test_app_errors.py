"""Bad input gets a clear 4xx naming what was expected; nothing produces a 500 except a failing
model call, which fails only its own batch and carries the request id."""

from __future__ import annotations

import gzip
import time

import httpx
import numpy as np
import pytest
from service_helpers import AppFactory, AppHarness, GatedModel, tone

from service.runtime.models import ServedModel
from service.testing import audio_file, npy_bytes

pytestmark = pytest.mark.asyncio

NPY = {"content-type": "application/x-npy"}
WAV = {"content-type": "audio/wav"}


def assert_error(response: httpx.Response, status: int, message: str, error_type: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message.lower() in error["message"].lower(), error["message"]
    assert error["request_id"] == response.headers["x-request-id"] != ""
    if error_type is not None:
        assert error["type"] == error_type


def mel(frames: int = 10, n_mels: int = 100) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n_mels, frames)).astype(np.float32)


async def test_malformed_bodies_are_400(app: AppHarness) -> None:
    c = app.client
    assert_error(await c.post("/decode/mel", content=b'{"mel": [[1.0,', headers={"content-type": "application/json"}),
                 400, "malformed JSON", "malformed_payload")
    assert_error(await c.post("/decode/mel", content=b"\x93NUMPY\x01\x00garbage", headers=NPY), 400, ".npy header")
    assert_error(await c.post("/decode/mel", content=b"not numpy at all", headers=NPY), 400, "not a .npy file")
    truncated = npy_bytes(mel())[:-7]
    assert_error(await c.post("/decode/mel", content=truncated, headers=NPY), 400, "declares shape (100, 10)")
    assert_error(await c.post("/decode/encodec", content=b"{codes}", headers={"content-type": "application/json"}),
                 400, "malformed JSON")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((100, 10), np.int64), "expected float32 mel values"),
        (np.zeros((100,), np.float32), "2-D mel spectrogram of shape (100, T)"),
        (np.zeros((80, 10), np.float32), "expected 100 mel bands (rows), got 80"),
        (np.full((100, 10), np.nan, np.float32), "NaN or Inf"),
        (np.full((100, 10), np.inf, np.float32), "NaN or Inf"),
        (np.zeros((100, 1), np.float32), "send at least 2"),
    ],
)
async def test_invalid_mels_are_422(app: AppHarness, array: np.ndarray, message: str) -> None:
    assert_error(await app.client.post("/decode/mel", content=npy_bytes(array), headers=NPY), 422, message,
                 "invalid_input")


async def test_invalid_mel_json_is_422(app: AppHarness) -> None:
    c = app.client
    assert_error(await c.post("/decode/mel", json={"mel": [[1.0, 2.0], [3.0]]}), 422, "rectangular")
    assert_error(await c.post("/decode/mel", json={"spectrogram": []}), 422, "unknown JSON keys")
    # NaN is no JSON literal (RFC 8259): a parse error, as any other character there would be
    assert_error(await c.post("/decode/mel", content=b'{"mel": [[NaN]]}', headers={"content-type": "application/json"}),
                 400, "malformed JSON", "malformed_payload")


@pytest.mark.parametrize(
    ("body", "query", "message"),
    [
        ({"codes": [[0, 1024], [1, 2]]}, "", "codes must lie in [0, 1024); found 1024"),
        ({"codes": [[0, -3], [1, 2]]}, "", "found -3"),
        ({"codes": [[0.5, 1.0], [1.0, 2.0]]}, "", "expected integer codes"),
        ({"codes": np.zeros((4, 5), int).tolist()}, "?bandwidth_id=2", "expects 8 codebooks, got K=4"),
        ({"codes": np.zeros((4, 5), int).tolist(), "bandwidth": 12}, "", "expects 16 codebooks, got K=4"),
        ({"codes": np.zeros((8, 5), int).tolist()}, "?bandwidth_id=9", "unknown bandwidth_id 9; expected one of"),
        ({"codes": np.zeros((8, 5), int).tolist()}, "?bandwidth=5", "unknown bandwidth 5 kbps"),
        ({"codes": np.zeros((3, 5), int).tolist()}, "", "cannot infer the bandwidth from 3 codebooks"),
        ({"codes": np.zeros((8, 5), int).tolist(), "bandwidth_id": 1}, "?bandwidth_id=2", "given twice"),
        ({"codes": [[1, 2, 3]]}, "", "cannot infer the bandwidth from 1 codebooks"),
        ({"codes": np.zeros((30, 8), int).tolist()}, "", "(it looks transposed: send the codebooks as rows"),
        ({"codes": np.zeros((30, 8), int).tolist()}, "?bandwidth=6", "got K=30 (it looks transposed"),
    ],
)
async def test_invalid_codes_and_bandwidths_are_422(app: AppHarness, body: dict, query: str, message: str) -> None:
    assert_error(await app.client.post(f"/decode/encodec{query}", json=body), 422, message)


async def test_codes_npy_with_wrong_dtype_is_422(app: AppHarness) -> None:
    response = await app.client.post("/decode/encodec", content=npy_bytes(np.zeros((8, 5), np.float32)), headers=NPY)
    assert_error(response, 422, "expected integer codes, got float32")


async def test_unsupported_media_types_are_415(app: AppHarness) -> None:
    c = app.client
    assert_error(await c.post("/decode/mel", content=b"1,2,3", headers={"content-type": "text/csv"}), 415,
                 "expected application/json or application/x-npy", "unsupported_media_type")
    assert_error(await c.post("/resynthesize", json={"audio": [0.1]}), 415, "expected one of application/octet-stream")
    mixed = {"content-type": "multipart/mixed; boundary=x"}
    assert_error(await c.post("/resynthesize", content=b"--x--", headers=mixed),
                 415, "or multipart/form-data with the audio file in a part named 'file'")
    # A compressed body: 415 naming the coding (RFC 7694), not a parse error about its bytes.
    mel = npy_bytes(np.zeros((100, 5), np.float32))
    for path, body, kind in (("/decode/mel", gzip.compress(mel), NPY), ("/resynthesize", b"RIFF", WAV)):
        assert_error(await c.post(path, content=body, headers={**kind, "content-encoding": "gzip"}), 415,
                     "Content-Encoding 'gzip' is not supported; send the body uncompressed", "unsupported_media_type")
    identity = await c.post("/decode/mel", content=mel, headers={**NPY, "content-encoding": "identity"})
    assert identity.status_code == 200


async def test_bad_audio_files(app: AppHarness) -> None:
    c = app.client
    wav = {"content-type": "audio/wav"}
    assert_error(await c.post("/resynthesize", content=b"RIFF....WAVEjunkjunk", headers=wav), 400,
                 "could not decode the audio file; expected WAV, FLAC, OGG/Vorbis, OGG/Opus or MP3")
    assert_error(await c.post("/resynthesize", content=b"", headers=wav), 422, "body is empty")
    empty_wav = audio_file(np.zeros(0, np.float32), 24000)
    assert_error(await c.post("/resynthesize", content=empty_wav, headers=wav), 422, "contains no samples")
    short = audio_file(np.zeros(100, np.float32), 24000)
    assert_error(await c.post("/resynthesize", content=short, headers=wav), 422, "the audio is too short")
    empty_part = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n\r\n--b--\r\n")
    assert_error(await c.post("/resynthesize", content=empty_part, headers={"content-type": "multipart/form-data; "
                              "boundary=b"}), 422, "the file part 'file' of the multipart/form-data body is empty")
    aiff = audio_file(tone(0.1, 24000), 24000, "AIFF", "PCM_16")
    assert (await c.post("/resynthesize", content=aiff, headers={"content-type": "audio/aiff"})).status_code == 200
    # Said in the upload's own samples and rate, not in the 24 kHz ones it was resampled to.
    one_sample = audio_file(np.zeros(1, np.float32), 8000)
    assert_error(await c.post("/resynthesize", content=one_sample, headers=wav), 422,
                 "the audio is too short: 1 samples at 8000 Hz; the mel model needs at least 21.4 ms (171 samples "
                 "at 8000 Hz)")
    # The fewest frames that do: 942 at 44.1 kHz are 512.7 samples at 24 kHz, rounded to the 513 the model needs.
    assert_error(await c.post("/resynthesize", content=audio_file(tone(1, 44100)[:941], 44100), headers=wav), 422,
                 "the audio is too short: 941 samples at 44100 Hz; the mel model needs at least 21.4 ms (942 samples")
    enough = await c.post("/resynthesize", content=audio_file(tone(1, 44100)[:942], 44100), headers=wav)
    assert enough.status_code == 200 and enough.headers["x-audio-duration"] == f"{513 / 24000:.6f}"


async def test_a_query_parameter_the_endpoint_does_not_take_is_refused(app: AppHarness) -> None:
    """As an unknown JSON key is: a misspelt option, or one of another endpoint, used to be dropped silently
    (``/decode/mel?bandwidth_id=2`` answered 200, ``?sample_rat=16000`` at 24 kHz)."""
    c = app.client
    mel = npy_bytes(np.zeros((100, 9), np.float32))
    for query, name in (("bandwidth_id=2", "bandwidth_id"), ("sample_rat=16000", "sample_rat")):
        assert_error(await c.post(f"/decode/mel?{query}", content=mel, headers=NPY), 422,
                     f"'{name}': unknown query parameter of /decode/mel; it takes format, model, sample_rate, stream",
                     "invalid_parameter")
    body = audio_file(tone(0.2, 24000), 24000)
    assert_error(await c.post("/resynthesize?lookahead_frames=3", content=body, headers={"content-type": "audio/wav"}),
                 422, "it takes bandwidth, bandwidth_id, format, model, sample_rate, stream", "invalid_parameter")
    assert (await c.post("/decode/mel?sample_rate=16000&stream=false", content=mel, headers=NPY)).status_code == 200
    # Given twice, one value was taken without a word (the last): which, a client could not know.
    assert_error(await c.post("/decode/mel?sample_rate=16000&format=flac&sample_rate=22050", content=mel, headers=NPY),
                 422, "sample_rate: query parameter given more than once; give it once", "invalid_parameter")


async def test_bad_resynthesis_parameters(app: AppHarness) -> None:
    c = app.client
    body = audio_file(tone(0.2, 24000), 24000)
    wav = {"content-type": "audio/wav"}
    assert_error(await c.post("/resynthesize?model=encodec", content=body, headers=wav), 422,
                 "a bandwidth is required")
    assert_error(await c.post("/resynthesize?bandwidth_id=1", content=body, headers=wav), 422,
                 "apply to EnCodec models only")
    # A name the server does not serve: 404, listing the names it serves
    assert_error(await c.post("/resynthesize?model=hifigan", content=body, headers=wav), 404,
                 "served: mel (mel), encodec (encodec)", "model_not_loaded")


async def test_bad_query_parameters_and_headers(app: AppHarness) -> None:
    c = app.client
    body = {"mel": mel().tolist()}
    assert_error(await c.post("/decode/mel?format=mp3", json=body), 422, "format", "invalid_parameter")
    assert_error(await c.post("/decode/encodec?bandwidth_id=two", json={"codes": [[1]]}), 422, "bandwidth_id")
    assert_error(await c.post("/decode/mel", json=body, headers={"x-request-timeout": "soon"}), 422,
                 "X-Request-Timeout must be a positive number of seconds")
    assert_error(await c.post("/decode/mel", json=body, headers={"x-request-timeout": "-1"}), 422,
                 "X-Request-Timeout")
    assert_error(await c.post("/decode/mel", json=body, headers={"accept": "application/json"}), 406,
                 "available: audio/wav, audio/flac")


async def test_limits_answer_413_with_the_limit(make_app: AppFactory) -> None:
    async with make_app(max_body_bytes=20_000, max_audio_seconds=1.0) as h:
        big = npy_bytes(mel(frames=100))  # 40 kB body
        assert_error(await h.client.post("/decode/mel", content=big, headers=NPY), 413,
                     "exceeds the limit of 20000 bytes (VOCOS_MAX_BODY_BYTES)", "payload_too_large")
        fits = npy_bytes(np.zeros((100, 48), np.float32))  # 47 hops * 256 / 24000 = 0.5 s
        assert (await h.client.post("/decode/mel", content=fits, headers=NPY)).status_code == 200
        codes = np.zeros((2, 120), int)  # 120 * 320 / 24000 = 1.6 s
        assert_error(await h.client.post("/decode/encodec", json={"codes": codes.tolist()}), 413,
                     "would last 1.6 s; this server produces at most 1 s per request (VOCOS_MAX_AUDIO_SECONDS)")
        just_over = np.zeros((2, 76), int)  # 76 * 320 / 24000 = 1.0133 s: shown with the decimals that say so
        assert_error(await h.client.post("/decode/encodec", json={"codes": just_over.tolist()}), 413,
                     "would last 1.01 s; this server produces at most 1 s")
        audio = audio_file(tone(1.5, 8000), 8000, "WAV", "PCM_U8")  # 12 kB
        assert_error(await h.client.post("/resynthesize", content=audio, headers={"content-type": "audio/wav"}),
                     413, "lasts 1.5 s; this server accepts at most 1 s")
        # An upload over the body limit is told that a compressed file carries the same audio in fewer bytes
        wav = audio_file(tone(0.5, 48000), 48000, "WAV", "FLOAT")  # 96 kB
        assert_error(await h.client.post("/resynthesize", content=wav, headers={"content-type": "audio/wav"}), 413,
                     "(VOCOS_MAX_BODY_BYTES); compressed audio (FLAC, OGG/Opus, MP3) carries the same audio")


@pytest.mark.parametrize("query", ["model=mel", "model=encodec&bandwidth_id=0"])
async def test_sample_rates_below_the_floor_are_refused_before_decoding(
    make_app: AppFactory, query: str
) -> None:
    one_hertz = audio_file(tone(599.0, 1), 1)  # 1.2 KB; resampled, 599 s of audio for the vocoder
    wav = {"content-type": "audio/wav"}
    async with make_app() as h:
        started = time.perf_counter()
        refused = await h.client.post(f"/resynthesize?{query}", content=one_hertz, headers=wav)
        assert time.perf_counter() - started < 1.0
        assert_error(refused, 422, "sample rate is 1 Hz; this server accepts 8000 Hz or more (VOCOS_MIN_SAMPLE_RATE)",
                     "invalid_input")
        at_floor = await h.client.post(f"/resynthesize?{query}", content=audio_file(tone(0.2, 8000), 8000),
                                       headers=wav)
        assert at_floor.status_code == 200, at_floor.text
    async with make_app(min_sample_rate=16000) as h:
        assert_error(await h.client.post(f"/resynthesize?{query}", content=audio_file(tone(0.2, 8000), 8000),
                                         headers=wav), 422, "accepts 16000 Hz or more")


async def test_disabled_model_and_unknown_paths(make_app: AppFactory, models: dict[str, ServedModel]) -> None:
    async with make_app(models_override={"mel": models["mel"]}, encodec_model="none") as h:
        assert_error(await h.client.post("/decode/encodec", json={"codes": [[1, 2], [3, 4]]}), 404,
                     "this server serves no encodec model (served: mel (mel)); add one with VOCOS_MODELS",
                     "model_not_loaded")
    async with make_app(models_override={"encodec": models["encodec"]}, mel_model="none") as h:
        # /resynthesize takes any model; its default is the first mel one, which this server lacks
        assert_error(await h.client.post("/resynthesize", content=audio_file(tone(0.2, 24000), 24000),
                                         headers={"content-type": "audio/wav"}), 404,
                     "serves no mel model (served: encodec (encodec)); add one with VOCOS_MODELS or "
                     "VOCOS_MEL_MODEL, or name a served model with ?model= (an EnCodec one with bandwidth",
                     "model_not_loaded")
        # Starlette's own messages were "Not Found" and "Method Not Allowed": they said neither what was asked
        # for nor what to ask for instead.
        assert_error(await h.client.get("/decode/nothing"), 404,
                     "no such path '/decode/nothing'; the API's paths: GET /healthz, GET /readyz, GET /metrics, "
                     "GET /models, POST /decode/mel, POST /decode/encodec, POST /resynthesize (GET /docs documents "
                     "them)", "http_error")
        # Starlette redirected a trailing slash with an empty 307 to an http:// URL, wrong behind a TLS proxy.
        assert_error(await h.client.post("/decode/mel/", json={"mel": [[0.0]]}), 404,
                     "no such path '/decode/mel/'; without the trailing slash: POST /decode/mel", "http_error")
        wrong_method = await h.client.get("/decode/mel")
        assert_error(wrong_method, 405, "GET is not allowed on '/decode/mel'; it takes POST", "http_error")
        assert wrong_method.headers["allow"] == "POST"


async def test_a_failing_batch_is_a_500_with_request_id_and_the_engine_keeps_serving(
    make_app: AppFactory, models: dict[str, ServedModel]
) -> None:
    gated = GatedModel(models["mel"])
    async with make_app(models_override={"mel": gated}) as h:
        gated.fail_with = RuntimeError("simulated device failure")
        response = await h.client.post("/decode/mel", json={"mel": mel().tolist()}, headers={"x-request-id": "r-42"})
        assert_error(response, 500, "request id r-42", "internal")
        assert "simulated device failure" in response.json()["error"]["message"]
        gated.fail_with = None
        assert (await h.client.post("/decode/mel", json={"mel": mel().tolist()})).status_code == 200
        assert (await h.client.get("/healthz")).status_code == 200
        metrics = (await h.client.get("/metrics")).text
        assert 'vocos_requests_total{endpoint="/decode/mel",status="500"} 1.0' in metrics
