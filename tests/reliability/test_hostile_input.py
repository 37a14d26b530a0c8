"""Hostile input, case by case: pickles, oversized and nested JSON, decompression bombs, wrong content
types, abusive headers, and checkpoints that carry code. Every answer is a 4xx naming the problem,
never a 500, and nothing is unpickled or allocated at the size an input merely claims."""

from __future__ import annotations

import asyncio
import io
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from service_helpers import GatedModel, wait_until

from service.errors import PayloadTooLargeError
from service.runtime.audio_io import decode_audio
from service.runtime.models import StartupError, load_models
from service.settings import Settings
from service.testing import npy_bytes
from vocos_core import Vocos
from vocos_core.errors import CheckpointError
from vocos_core.testing import write_random_checkpoint

NPY = {"content-type": "application/x-npy"}
MIB = 1024 * 1024


class _Trap:
    """Unpickling this object creates ``path``: proof that a body or file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.path), "w"))


def npy_with_pickle(trap: Path) -> bytes:
    """A well-formed ``.npy`` of object dtype whose payload, if unpickled, creates ``trap``."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Trap(trap), 1], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def npy_header(descr: str | list[tuple[str, str]], shape: tuple[int, ...]) -> bytes:
    """Only the header of a ``.npy`` (version 1.0) claiming ``shape``: the data is missing."""
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def flac_of_silence(seconds: int, rate: int, channels: int = 1) -> bytes:
    """Silence compresses ~600:1 in FLAC: hours of audio in a few hundred kB."""
    buffer = io.BytesIO()
    block = np.zeros((rate * 10, channels), dtype=np.int16)
    with sf.SoundFile(buffer, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds // 10):
            f.write(block)
    return buffer.getvalue()


def without_length(flac: bytes) -> bytes:
    """The same FLAC with STREAMINFO's total-samples field zeroed: 'length unknown' (legal in FLAC)."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # first metadata block is STREAMINFO
    field = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = field.to_bytes(8, "big")
    return bytes(data)


def peak_allocation(fn: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Peak bytes traced (numpy reports its buffers to tracemalloc) while ``fn`` runs, and what it raised."""
    tracemalloc.start()
    try:
        fn()
        error = None
    except Exception as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


# -- pickles and .npy headers -----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/decode/mel", "/decode/encodec"])
async def test_object_npy_is_refused_without_unpickling(make_app, tmp_path: Path, path: str) -> None:
    trap = tmp_path / "unpickled"
    async with make_app() as app:
        response = await app.client.post(path, content=npy_with_pickle(trap), headers=NPY)
    assert response.status_code == 422
    assert "no objects" in response.json()["error"]["message"]
    assert not trap.exists()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("descr", "shape", "status"),
    [
        ("<f4", (100, 2**40), 400),  # a terabyte claimed by a 128-byte body: refused, not allocated
        ("<f4", (2**62, 2**62), 400),  # the product overflows int64
        ([("a", "<f4")], (100, 4), 422),  # record dtype
        ("<c8", (100, 4), 400),  # complex: the data is missing anyway
    ],
)
async def test_npy_headers_that_lie_or_overflow(
    make_app, descr: str | list[tuple[str, str]], shape: tuple[int, ...], status: int
) -> None:
    async with make_app() as app:
        response = await app.client.post("/decode/mel", content=npy_header(descr, shape), headers=NPY)
    assert response.status_code == status, response.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("descr", "shape", "data_bytes"),
    [
        ("<f4", (-1, -100), 400),  # negative sizes, whose product matches the data
        ("<f4", (True, 100, 2), 800),  # a boolean size
        ("<f4", (0, 2**62), 0),  # no data, but past numpy's largest array
        ("<f4", (1,) * 65, 4),  # past numpy's dimension limit
        ("(2,)<f4", (100, 4), 3200),  # a sub-array dtype
    ],
)
async def test_npy_headers_of_impossible_arrays_are_400(
    make_app, descr: str, shape: tuple[int, ...], data_bytes: int
) -> None:
    async with make_app() as app:
        for path in ("/decode/mel", "/decode/encodec"):
            body = npy_header(descr, shape) + b"\0" * data_bytes
            response = await app.client.post(path, content=body, headers=NPY)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["type"] == "malformed_payload"


# -- JSON -----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_body_over_the_limit_is_refused_declared_or_streamed(make_app) -> None:
    body = b'{"mel": [' + b"0.0," * (MIB // 2) + b"0.0]}"

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async with make_app(max_body_bytes=MIB) as app:
        declared = await app.client.post("/decode/mel", content=body, headers={"content-type": "application/json"})
        streamed = await app.client.post("/decode/mel", content=chunks(), headers={"content-type": "application/json"})
    for response in (declared, streamed):
        assert response.status_code == 413
        assert "VOCOS_MAX_BODY_BYTES" in response.json()["error"]["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"mel": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),  # nested past the parser's recursion limit
        (b'{"mel": ' + b"[" * 40 + b"1.0" + b"]" * 40 + b"}", 422),  # 40-D: parsed, refused by shape
        (b'{"codes": [[' + b"9" * 5000 + b"]]}", 400),  # an integer literal of 5000 digits
        (b'{"codes": [[1e400, 2]]}', 400),  # beyond float64: the parser refuses it
        (b'{"mel": [[NaN, Infinity]]}', 400),  # not JSON (RFC 8259 has no NaN or Infinity)
        (b'{"mel": [[1, "a"]]}', 422),
        (b'{"mel": [[1, 2], [3]]}', 422),  # ragged
        (b'{"mel": {"$ref": "#"}}', 422),
        (b'{"mel": [[0.0]], "mel": 1}', 422),  # duplicate key: the last wins, and it is not an array
        (b'\xff\xfe{"mel": []}', 400),  # not UTF-8
        (b"", 400),
    ],
    ids=lambda value: value[:24].decode("latin-1") if isinstance(value, bytes) else str(value),
)
async def test_malformed_json_is_a_client_error(make_app, body: bytes, status: int) -> None:
    path = "/decode/encodec" if b"codes" in body else "/decode/mel"
    async with make_app() as app:
        response = await app.client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]["type"] in {"malformed_payload", "invalid_input"}


@pytest.mark.asyncio
async def test_error_messages_do_not_echo_unbounded_input(make_app) -> None:
    """100 000 unknown keys are refused with a message of bounded size."""
    body = ("{" + ",".join(f'"k{i}": 0' for i in range(100_000)) + "}").encode()
    async with make_app() as app:
        response = await app.client.post("/decode/mel", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert len(response.content) < 4096


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/decode/mel%0A", "/healthz%0a", "/models%0D", "/decode/%00mel"])
async def test_a_path_with_a_control_character_is_400_not_another_route(make_app, path: str) -> None:
    """Routes matched "/decode/mel\\n" as "/decode/mel" (a regex's $ matches before a final newline): the
    request was served, but counted in no metric, and a proxy's rules saw another path."""
    async with make_app() as app:
        response = await app.client.post(path, content=b"")
        metrics = (await app.client.get("/metrics")).text
    assert response.status_code == 400 and "control character" in response.json()["error"]["message"]
    assert 'vocos_requests_total{endpoint="/decode/mel",status="200"}' not in metrics


def test_a_stream_path_with_a_control_character_is_refused(base_settings: Settings, models: dict) -> None:
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse

    from service.http.app import create_app

    with TestClient(create_app(base_settings, models)) as client:
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/stream/mel%0A"):
            pass
        assert refused.value.status_code == 400 and "control character" in refused.value.json()["error"]["message"]
        with client.websocket_connect("/stream/mel") as ws:  # the path itself still streams
            assert ws.receive_json()["type"] == "start"


# -- decompression bombs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_hours_flac() -> bytes:
    return flac_of_silence(3 * 3600, 8000)


def test_hours_declared_in_the_header_are_refused_before_decoding(three_hours_flac: bytes) -> None:
    assert len(three_hours_flac) < 400_000
    peak, error = peak_allocation(lambda: decode_audio(three_hours_flac, 24000, 600.0))
    assert isinstance(error, PayloadTooLargeError) and "10800.0 s" in str(error)
    # 3 h at 8 kHz would be 346 MB of float32; the refusal allocates next to nothing.
    assert peak < 2 * MIB


def test_hours_behind_an_unknown_length_stop_at_the_limit(three_hours_flac: bytes) -> None:
    limit_s = 60.0
    peak, error = peak_allocation(lambda: decode_audio(without_length(three_hours_flac), 24000, limit_s))
    assert isinstance(error, PayloadTooLargeError)
    # Decoding stops one block past the limit: memory of the order of the limit (60 s at 8 kHz = 1.9 MB).
    assert peak < 4 * limit_s * 8000 * 4


def test_channels_and_sample_rate_do_not_multiply_the_memory_of_the_limit() -> None:
    """8 channels at 192 kHz, length unknown: memory follows the 24 kHz mono result, not 64x that."""
    limit_s = 20.0
    bomb = without_length(flac_of_silence(60, 192000, channels=8))
    assert len(bomb) < 2 * MIB
    peak, error = peak_allocation(lambda: decode_audio(bomb, 24000, limit_s))
    assert isinstance(error, PayloadTooLargeError)
    # Read whole, 20 s of 8 channels at 192 kHz is 123 MB of float32; 20 s of 24 kHz mono is 1.9 MB.
    assert peak < 8 * MIB


def test_many_channels_at_a_high_rate_decode_to_the_right_length() -> None:
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, (3 * 192000, 8)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, 192000, format="FLAC", subtype="PCM_24")
    audio = decode_audio(buffer.getvalue(), 24000, 600.0).samples
    assert audio.shape == (3 * 24000,) and audio.dtype == np.float32


@pytest.mark.asyncio
async def test_a_decompression_bomb_is_answered_413_quickly(make_app, three_hours_flac: bytes) -> None:
    async with make_app() as app:
        response = await app.client.post(
            "/resynthesize", content=three_hours_flac, headers={"content-type": "audio/flac", "x-request-timeout": "5"}
        )
    assert response.status_code == 413
    assert "VOCOS_MAX_AUDIO_SECONDS" in response.json()["error"]["message"]


# -- content types ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "content_type", "body", "status"),
    [
        ("/decode/mel", "text/plain", b'{"mel": [[0.0]]}', 415),
        ("/decode/mel", "image/png", b"\x89PNG\r\n\x1a\n", 415),
        ("/decode/mel", "application/x-npy", b'{"mel": [[0.0]]}', 400),  # says .npy, is JSON
        ("/decode/mel", "application/json", b"\x93NUMPY\x01\x00", 400),  # says JSON, is .npy
        ("/decode/mel", "application/json; charset=utf-16", b'{"mel": "x"}', 422),
        ("/decode/encodec", "multipart/form-data; boundary=x", b"--x--", 415),
        ("/resynthesize", "application/json", b'{"audio": []}', 415),
        ("/resynthesize", "multipart/form-data; boundary=x", b"--x--", 422),  # a form without a file part
        ("/resynthesize", "multipart/form-data; boundary=x", b"--y--", 400),  # another boundary
        ("/resynthesize", "multipart/mixed; boundary=x", b"--x--", 415),
        ("/resynthesize", "audio/wav", b"RIFF\x00\x00\x00\x00WAVEfmt ", 400),  # truncated header
        ("/resynthesize", "audio/mpeg", b"\xff\xfb" + b"\x00" * 64, 400),
        ("/resynthesize", "audio/flac", b"fLaC" + b"\xff" * 64, 400),
    ],
)
async def test_wrong_or_lying_content_types(make_app, path: str, content_type: str, body: bytes, status: int) -> None:
    async with make_app() as app:
        response = await app.client.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text[:300]
    assert "error" in response.json()


# -- headers ------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "value", ["nan", "inf", "-1", "0", "1e999", "abc", "", "1" * 5000, "0x10"], ids=lambda v: v[:8] or "empty"
)
async def test_x_request_timeout_abuse_is_422(make_app, value: str) -> None:
    async with make_app() as app:
        response = await app.client.post(
            "/decode/mel", json={"mel": [[0.0] * 8] * 100}, headers={"x-request-timeout": value}
        )
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 4096


_HUGE = "x" * 100_000  # a 100 KB header value
_WAV = io.BytesIO()
sf.write(_WAV, np.zeros(2400, np.float32), 24000, format="WAV")
_BODIES = {
    "/decode/mel": (b'{"mel": ' + str([[0.0] * 8] * 100).encode() + b"}", "application/json"),
    "/decode/encodec": (b'{"codes": [[1, 2], [3, 4]]}', "application/json"),
    "/resynthesize": (_WAV.getvalue(), "audio/wav"),
    "/resynthesize?model=encodec&bandwidth_id=0": (_WAV.getvalue(), "audio/wav"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("path", list(_BODIES))
@pytest.mark.parametrize(("header", "value", "status"), [
    ("accept", "text/" + _HUGE, 406),
    ("content-type", "application/" + _HUGE, 415),
    ("content-type", "multipart/form-data; boundary=" + "b" * 200, None),  # the boundary is quoted back
    ("x-request-timeout", "1" * 100_000 + "s", 422),
])
async def test_echoed_header_values_are_clipped(make_app, path: str, header: str, value: str,
                                                status: int | None) -> None:
    body, content_type = _BODIES[path]
    async with make_app() as app:
        response = await app.client.post(path, content=body, headers={"content-type": content_type, header: value})
    if status is None:  # multipart: 415 on the decode endpoints, 400 (body not in that form) on /resynthesize
        status = 400 if path.startswith("/resynthesize") else 415
    assert response.status_code == status, response.text[:300]
    assert len(response.content) < 1024, response.text[:300]
    assert value[-100:] not in response.text
    if len(value) > 1000:  # quoted: its start, an ellipsis and its length
        assert "… (" in response.json()["error"]["message"] and " characters)" in response.text


@pytest.mark.asyncio
@pytest.mark.parametrize("value", ["a\tb", "x" * 65, "../../etc", "id with spaces", "é", "a;b=c", "<script>"])
async def test_unsafe_request_ids_are_replaced(make_app, value: str) -> None:
    async with make_app() as app:
        response = await app.client.get("/healthz", headers={"x-request-id": value.encode("utf-8")})
    assert response.status_code == 200
    echoed = response.headers["x-request-id"]
    assert echoed != value and len(echoed) == 32 and echoed.isalnum()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"accept": "text/html"}, 406),
        ({"accept": "audio/wav;q=abc, text/*;q=1"}, 406),  # a malformed q counts as 0: nothing acceptable
        ({"accept": ",".join(["text/html"] * 2000) + ",audio/flac"}, 200),
        ({"authorization": "Bearer " + "x" * 10_000}, 200),  # no keys configured: ignored
        ({"content-type": "application/json; " + "a=b; " * 1000}, 200),
    ],
)
async def test_header_abuse_on_decode(make_app, headers: dict[str, str], status: int) -> None:
    async with make_app() as app:
        response = await app.client.post("/decode/mel", json={"mel": [[0.0] * 8] * 100}, headers=headers)
    assert response.status_code == status, response.text[:300]


# -- checkpoints ---------------------------------------------------------------------------------------------


def test_checkpoints_are_loaded_weights_only(tmp_path: Path, mel_checkpoint: Path) -> None:
    """A pytorch_model.bin carrying a pickled callable is refused and the callable never runs."""
    trap = tmp_path / "unpickled"
    directory = write_random_checkpoint(tmp_path / "evil", "mel", dim=32, num_layers=1)
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "evil": _Trap(trap)}, directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="not a loadable weights file"):
        Vocos.from_pretrained(str(directory))
    settings = Settings(mel_model=str(directory), encodec_model="none", device="cpu")
    with pytest.raises(StartupError, match="cannot load the mel model"):
        load_models(settings)
    assert not trap.exists()
    Vocos.from_pretrained(str(mel_checkpoint))  # the same loader takes a genuine checkpoint


def test_encodec_weights_are_loaded_weights_only(tmp_path: Path, encodec_checkpoint: Path) -> None:
    trap = tmp_path / "unpickled"
    weights = tmp_path / "encodec_24khz.th"
    torch.save({"encoder.model.0.conv.conv.bias": torch.zeros(32), "evil": _Trap(trap)}, weights)
    model = Vocos.from_pretrained(str(encodec_checkpoint), encodec_weights=str(weights))
    with pytest.raises(CheckpointError):
        model.audio_to_features(torch.zeros(24000), 0)
    assert not trap.exists()


# -- answers far larger than their requests -------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_answer_beyond_the_byte_budget_is_refused_before_it_is_computed(make_app) -> None:
    """A few kB of EnCodec codes with ?sample_rate=192000&format=wav32f asked for 8 times the model's samples: a
    180 kB body made a 460 MB answer, beyond VOCOS_MAX_INFLIGHT_BYTES (256 MiB) alone, and 1.4 GB of peak memory.
    A whole answer that cannot fit the budget is now 413 before any compute; at the model's rate, or streamed,
    the same request is served."""
    codes = np.zeros((2, 600), dtype=np.int16)  # 8 s at 24 kHz: 0.77 MB as float32, 6.1 MB at 192 kHz
    body = npy_bytes(codes)
    async with make_app(max_inflight_bytes=2 * MIB, max_body_bytes=MIB) as app:
        amplified = await app.client.post("/decode/encodec?sample_rate=192000&format=wav32f", content=body,
                                          headers=NPY)
        native = await app.client.post("/decode/encodec?format=wav32f", content=body, headers=NPY)
        streamed = await app.client.post("/decode/encodec?sample_rate=192000&stream=true", content=body, headers=NPY)
        computed = app.state.metrics.registry.get_sample_value("vocos_audio_seconds_total", {"model": "encodec"})
        held = app.state.inflight.held
    assert amplified.status_code == 413, amplified.text[:300]
    assert "VOCOS_MAX_INFLIGHT_BYTES" in amplified.json()["error"]["message"]
    assert native.status_code == 200 and streamed.status_code == 200, (native.text[:200], streamed.text[:200])
    assert computed == pytest.approx(2 * 600 * 320 / 24000, rel=0.01)  # the refused one was never decoded
    assert held == 0


@pytest.mark.asyncio
async def test_whole_answers_being_computed_count_together_in_the_byte_budget(make_app, models) -> None:
    """Each answer within the budget, several at once were not: only bodies and answers already made counted,
    so many requests computing large answers together could hold several budgets of memory. An answer now
    holds its bytes from before it is computed; one that does not fit beside those in progress is 503 with
    Retry-After, and fits once they are done."""
    gated = GatedModel(models["encodec"])
    body = npy_bytes(np.zeros((2, 600), dtype=np.int16))  # 8 s: 1.5 MB as float32 at 48 kHz, 2 fit in no 2 MiB
    url = "/decode/encodec?sample_rate=48000"
    async with make_app(models={"encodec": gated}, max_inflight_bytes=2 * MIB, max_body_bytes=MIB) as app:
        gated.calls.clear()  # the warm-up's
        gated.entered.clear()
        gated.gate.clear()
        first = asyncio.create_task(app.client.post(url, content=body, headers=NPY))
        await wait_until(gated.entered.is_set)
        beside = await app.client.post(url, content=body, headers=NPY)
        gated.gate.set()
        first_answer = await first
        after = await app.client.post(url, content=body, headers=NPY)
        held = app.state.inflight.held
    assert beside.status_code == 503, beside.text[:300]
    assert beside.headers["retry-after"] == "1"
    assert "VOCOS_MAX_INFLIGHT_BYTES" in beside.json()["error"]["message"]
    assert first_answer.status_code == 200 and after.status_code == 200, (first_answer.text[:200], after.text[:200])
    assert gated.calls == [[600], [600]]  # the refused one was never decoded
    assert held == 0


@pytest.mark.asyncio
async def test_an_answer_that_fits_the_budget_only_without_its_own_body_is_413_not_503(make_app) -> None:
    """The request's body is held while its answer is computed: an answer that fits the budget alone but not
    beside its own body would be refused with 503 and Retry-After at every retry; it is 413, as one over the
    budget is."""
    mel = (np.random.default_rng(0).standard_normal((100, 1800)) - 2.0).astype(np.float32)
    body = npy_bytes(mel)  # 0.72 MB, and an answer of 1.84 MB: each under 2 MiB, not both
    async with make_app(max_inflight_bytes=2 * MIB, max_body_bytes=MIB) as app:
        refused = await app.client.post("/decode/mel", content=body, headers=NPY)
        streamed = await app.client.post("/decode/mel?stream=true", content=body, headers=NPY)
        held = app.state.inflight.held
    assert refused.status_code == 413, refused.text[:300]
    assert "VOCOS_MAX_INFLIGHT_BYTES" in refused.json()["error"]["message"]
    assert streamed.status_code == 200, streamed.text[:300]
    assert held == 0


@pytest.mark.asyncio
async def test_an_answer_is_held_in_the_byte_budget_while_it_is_encoded(make_app, models, monkeypatch) -> None:
    """The answer's bytes were released once its samples were made, before its body was encoded: while a long
    answer was encoded (off the event loop), neither it nor its body counted, and another fitted beside it."""
    import threading

    from service.http import request_io
    from service.runtime import audio_io, serving

    encoding, go_on = threading.Event(), threading.Event()

    def gated_encode(*args: object) -> bytes:
        if not encoding.is_set():  # the first answer's
            encoding.set()
            go_on.wait(30)
        return audio_io.encode_audio(*args)  # type: ignore[arg-type]

    for module in (request_io, serving):
        monkeypatch.setattr(module, "encode_audio", gated_encode, raising=False)
    body = npy_bytes(np.zeros((2, 600), dtype=np.int16))  # 8 s: 1.5 MB as float32 at 48 kHz, 2 fit in no 2 MiB
    url = "/decode/encodec?sample_rate=48000"
    async with make_app(models={"encodec": models["encodec"]}, max_inflight_bytes=2 * MIB,
                        max_body_bytes=MIB) as app:
        encoding.set()  # the warm-up's (if any) is not held
        encoding.clear()
        first = asyncio.create_task(app.client.post(url, content=body, headers=NPY))
        await wait_until(encoding.is_set)
        beside = await app.client.post(url, content=body, headers=NPY)
        go_on.set()
        first_answer = await first
        held = app.state.inflight.held
    assert beside.status_code == 503, beside.text[:300]
    assert first_answer.status_code == 200, first_answer.text[:300]
    assert held == 0
