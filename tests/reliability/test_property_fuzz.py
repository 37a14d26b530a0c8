"""Property-based tests of every decode endpoint against one running app: for any array, token grid,
audio file, mangled file, header or query value, the answer is a documented status within a time
limit (never a 5xx, never a hang), and whatever is accepted decodes to exactly its own audio."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reliability_helpers import AppThread, app_thread
from service_helpers import read_audio, settings_with, tone

from service.runtime.models import ServedModel
from service.settings import Settings
from service.testing import audio_file, npy_bytes
from vocos_core.mel_check import check_mel

CLIENT_ERRORS = {400, 404, 406, 413, 415, 422}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every CI run; widen locally with --hypothesis-seed
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def api(base_settings: Settings, models: dict[str, ServedModel]) -> Iterator[AppThread]:
    limits = settings_with(base_settings, max_audio_seconds=20.0, max_body_bytes=4 * 1024 * 1024)
    with app_thread(limits, models, limit=30.0) as running:
        yield running


def assert_answered(response: httpx.Response, allowed: set[int]) -> None:
    event(f"HTTP {response.status_code}")  # the spread shows with --hypothesis-show-statistics
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["request_id"] == response.headers["x-request-id"]


def assert_own_audio(response: httpx.Response, expected: np.ndarray) -> None:
    got = read_audio(response.content)[0]
    assert got.shape == expected.shape
    peak = float(np.max(np.abs(expected), initial=1e-3))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * peak)


# -- mel spectrograms -------------------------------------------------------------------------------------

_MEL_DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int16, np.int64, np.uint8, np.bool_,
                               np.complex64])
_MEL_SHAPES = st.one_of(
    st.tuples(st.just(100), st.integers(0, 48)),
    st.tuples(st.just(1), st.just(100), st.integers(1, 8)),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
)


@st.composite
def mel_arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of any dtype and shape; float ones mostly finite, sometimes with one NaN, Inf or huge value."""
    dtype = np.dtype(draw(_MEL_DTYPES))
    finite = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False) if dtype.kind in "fc" else None
    array = draw(hnp.arrays(dtype, draw(_MEL_SHAPES), elements=finite))
    if dtype.kind == "f" and array.size and draw(st.booleans()):
        poison = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
        with np.errstate(over="ignore"):
            array.flat[draw(st.integers(0, array.size - 1))] = poison
    return array


@FUZZ
@given(array=mel_arrays(), as_json=st.booleans())
def test_any_mel_array_is_decoded_exactly_or_refused(api: AppThread, models: dict[str, ServedModel],
                                                      array: np.ndarray, as_json: bool) -> None:
    if as_json and array.dtype.kind == "c":
        as_json = False  # JSON has no complex numbers
    if as_json:
        response = api.request("POST", "/decode/mel?format=wav32f", content=json.dumps({"mel": array.tolist()}),
                               headers={"content-type": "application/json"})
    else:
        response = api.request("POST", "/decode/mel?format=wav32f", content=npy_bytes(array),
                               headers={"content-type": "application/x-npy"})
    assert_answered(response, {200} | CLIENT_ERRORS)
    mel = array.reshape(array.shape[-2:]) if array.ndim == 3 and array.shape[0] == 1 else array
    with np.errstate(over="ignore"):
        as_float32 = mel.astype(np.float32) if mel.dtype.kind == "f" else mel
    valid = (array.dtype.kind == "f" and mel.ndim == 2 and mel.shape[0] == 100
             and mel.shape[1] >= models["mel"].min_frames and bool(np.isfinite(as_float32).all())
             and check_mel(as_float32, models["mel"].mel_front_end).impossible is None)
    assert (response.status_code == 200) == valid, response.text[:300]
    if valid:
        features = torch.from_numpy(as_float32)[None]
        assert_own_audio(response, models["mel"].model.decode(features)[0].numpy())


# -- EnCodec tokens -----------------------------------------------------------------------------------------

_CODES = hnp.arrays(
    st.sampled_from([np.int64, np.int32, np.int16]),
    st.tuples(st.sampled_from([1, 2, 3, 4, 8, 16, 17]), st.integers(0, 24)),
    elements=st.integers(-2, 1026),
)


@FUZZ
@given(codes=_CODES, bandwidth_id=st.none() | st.integers(-2, 5), as_json=st.booleans())
def test_any_token_grid_is_decoded_exactly_or_refused(api: AppThread, models: dict[str, ServedModel],
                                                       codes: np.ndarray, bandwidth_id: int | None,
                                                       as_json: bool) -> None:
    params = {"format": "wav32f"} | ({} if bandwidth_id is None else {"bandwidth_id": str(bandwidth_id)})
    if as_json:
        response = api.request("POST", "/decode/encodec", params=params, json={"codes": codes.tolist()})
    else:
        response = api.request("POST", "/decode/encodec", params=params, content=npy_bytes(codes),
                               headers={"content-type": "application/x-npy"})
    assert_answered(response, {200} | CLIENT_ERRORS)
    served = models["encodec"]
    k, t = codes.shape
    resolved = served.codebooks.index(k) if bandwidth_id is None and k in served.codebooks else bandwidth_id
    valid = (t >= served.min_frames and resolved is not None and 0 <= resolved < len(served.codebooks)
             and served.codebooks[resolved] == k and bool(((codes >= 0) & (codes < 1024)).all()))
    assert (response.status_code == 200) == valid, response.text[:300]
    if valid:
        expected = served.model.decode_codes(torch.from_numpy(codes.astype(np.int64)), resolved)[0].numpy()
        assert_own_audio(response, expected)


# -- audio files ------------------------------------------------------------------------------------------------

_CONTAINERS = st.sampled_from([("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24"), ("OGG", "VORBIS"),
                               ("MP3", "MPEG_LAYER_III")])


@st.composite
def audio_uploads(draw: st.DrawFn) -> tuple[bytes, float]:
    container, subtype = draw(_CONTAINERS)
    rates = [8000, 16000, 22050, 24000, 44100, 48000] + ([] if container in ("OGG", "MP3") else [1000, 96000])
    rate = draw(st.sampled_from(rates))
    channels = draw(st.integers(1, 2 if container == "MP3" else 6))
    seconds = draw(st.sampled_from([0.0, 0.001, 0.02, 0.3, 1.0]))
    samples = tone(seconds, rate, channels, seed=draw(st.integers(0, 3)))
    if subtype == "FLOAT" and samples.size and draw(st.booleans()):
        samples.flat[draw(st.integers(0, samples.size - 1))] = draw(st.sampled_from([np.nan, np.inf, 1e30]))
    try:
        return audio_file(samples, rate, container, subtype), seconds
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return b"", 0.0  # a combination libsndfile cannot write: an empty body, also worth sending


@FUZZ
@given(upload=audio_uploads(), model=st.sampled_from(["mel", "encodec"]), cut=st.none() | st.integers(0, 4000),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4))
def test_any_audio_file_or_mangled_file_is_resynthesized_or_refused(
    api: AppThread, upload: tuple[bytes, float], model: str, cut: int | None, flips: list[tuple[int, int]]
) -> None:
    body, seconds = upload
    data = bytearray(body if cut is None else body[:cut])
    for position, mask in flips:  # bit flips anywhere, headers included
        if data:
            data[position % len(data)] ^= mask
    query = "model=mel" if model == "mel" else "model=encodec&bandwidth=6"
    response = api.request("POST", f"/resynthesize?{query}", content=bytes(data),
                           headers={"content-type": "application/octet-stream"})
    assert_answered(response, {200} | CLIENT_ERRORS)
    if response.status_code == 200 and cut is None and not flips:
        audio = sf.read(io.BytesIO(response.content))[0]
        assert abs(audio.shape[0] / 24000 - seconds) < 0.1  # the length survives resampling and the vocoder


# -- headers and query parameters -------------------------------------------------------------------------------

_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)
_QUERY_TEXT = st.text(max_size=20)


@FUZZ
@given(timeout=st.none() | _HEADER_TEXT, accept=st.none() | _HEADER_TEXT, request_id=st.none() | _HEADER_TEXT,
       fmt=st.none() | _QUERY_TEXT, bandwidth=st.none() | _QUERY_TEXT, bandwidth_id=st.none() | _QUERY_TEXT,
       path=st.sampled_from(["/decode/mel", "/decode/encodec", "/resynthesize"]), model=st.none() | _QUERY_TEXT)
def test_any_header_or_query_value_is_answered(api: AppThread, timeout: str | None, accept: str | None,
                                               request_id: str | None, fmt: str | None, bandwidth: str | None,
                                               bandwidth_id: str | None, path: str, model: str | None) -> None:
    headers = {name: value.encode("latin-1") for name, value in
               [("x-request-timeout", timeout), ("accept", accept), ("x-request-id", request_id)] if value is not None}
    params = {name: value for name, value in
              [("format", fmt), ("bandwidth", bandwidth), ("bandwidth_id", bandwidth_id), ("model", model)]
              if value is not None}
    bodies = {
        "/decode/mel": (npy_bytes(np.zeros((100, 8), np.float32)), "application/x-npy"),
        "/decode/encodec": (npy_bytes(np.zeros((2, 8), np.int64)), "application/x-npy"),
        "/resynthesize": (audio_file(tone(0.2, 24000), 24000), "audio/wav"),
    }
    body, content_type = bodies[path]
    response = api.request("POST", path, params=params, content=body,
                           headers={**headers, "content-type": content_type})
    assert_answered(response, {200} | CLIENT_ERRORS | {504})  # a tiny X-Request-Timeout may pass first
