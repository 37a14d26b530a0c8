"""``?stream=true``: the same audio as the whole answer, a WAV header carrying the final length, every
endpoint, resampling, and FLAC refused."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from service_helpers import AppFactory, AppHarness, live_server, wait_until

from service.runtime.audio_io import resampled_length
from service.runtime.models import ServedModel
from service.runtime.serving import STREAMED_PUSH_FRAMES
from service.settings import Settings
from service.testing import audio_file, npy_bytes
from vocos_core.steps import Steps

pytestmark = pytest.mark.asyncio

NPY = {"content-type": "application/x-npy"}


def wav(content: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(content), dtype="float32")
    return samples, rate


async def both(app: AppHarness, path: str, body: bytes, headers: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The whole answer and the streamed one, decoded; their headers agree."""
    whole = await app.client.post(path, content=body, headers=headers)
    streamed = await app.client.post(path + ("&" if "?" in path else "?") + "stream=true", content=body,
                                     headers=headers)
    assert whole.status_code == streamed.status_code == 200, streamed.text
    for name in ("x-audio-duration", "x-sample-rate", "x-model", "content-type"):
        assert whole.headers[name] == streamed.headers[name]
    a, rate_a = wav(whole.content)
    b, rate_b = wav(streamed.content)
    assert rate_a == rate_b and a.shape == b.shape
    return a, b


@pytest.mark.parametrize("query", ["", "?sample_rate=16000", "?format=wav32f"])
async def test_streamed_mel_equals_the_whole_answer(app: AppHarness, query: str) -> None:
    mel = np.random.default_rng(0).standard_normal((100, 700)).astype(np.float32)
    a, b = await both(app, "/decode/mel" + query, npy_bytes(mel), NPY)
    assert np.abs(a - b).max() <= 2 / 32768  # a 16-bit step at most: float32 rounding of two exact decodes


async def test_a_mel_accepted_whole_is_streamed_whole_even_with_early_outliers(app: AppHarness) -> None:
    # 90 values above the front-end's bound, all in the first frame: within the 0.1 % the whole mel may
    # hold, but not within 0.1 % of its first frames; the streamed answer is not checked again by prefix
    top = app.state.slots["mel"].served.mel_front_end.log_max
    mel = (np.random.default_rng(2).standard_normal((100, 1000)) - 5).astype(np.float32)
    mel[:90, 0] = top + 1
    a, b = await both(app, "/decode/mel?format=wav32f", npy_bytes(mel), NPY)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    metrics = (await app.client.get("/metrics")).text.splitlines()
    assert not [line for line in metrics if line.startswith("vocos_input_warnings_total{")]


async def test_streamed_encodec_equals_the_whole_answer(app: AppHarness) -> None:
    codes = np.random.default_rng(1).integers(0, 1024, (4, 300))
    a, b = await both(app, "/decode/encodec?format=wav32f", npy_bytes(codes), NPY)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


@pytest.mark.parametrize(("query", "rate"), [("?format=wav32f", 24000), ("?model=encodec&bandwidth_id=1", 24000),
                                           ("?format=wav32f&sample_rate=16000", 16000)])
async def test_streamed_resynthesis_lasts_exactly_as_long_as_the_upload(app: AppHarness, query: str,
                                                                         rate: int) -> None:
    upload = audio_file((np.random.default_rng(2).standard_normal(33333) * 0.1).astype(np.float32), 22050)
    a, b = await both(app, "/resynthesize" + query, upload, {"content-type": "audio/wav"})
    assert b.size == round(33333 * rate / 22050)
    # To the last sample, resampled or not: the model's audio is fitted to the upload's length first.
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max() + 2 / 32768 * ("wav32f" not in query)


@pytest.mark.parametrize(("rate", "frames", "out_rate"), [(48000, 48001, 48000), (44100, 2053, 44100),
                                                          (16000, 16001, 48000), (44100, 44101, 16000)])
async def test_resynthesis_at_any_rate_lasts_the_uploads_duration_rounded_once(app: AppHarness, rate: int,
                                                                                frames: int, out_rate: int) -> None:
    # Rounded from the file's frames, not again from the 24 kHz samples: those were a sample off here.
    upload = audio_file((np.random.default_rng(4).standard_normal(frames) * 0.1).astype(np.float32), rate)
    a, b = await both(app, f"/resynthesize?format=wav32f&sample_rate={out_rate}", upload, {"content-type": "audio/wav"})
    assert a.size == b.size == resampled_length(frames, rate, out_rate)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


@pytest.mark.parametrize(("path", "body", "headers"), [
    ("/decode/mel", npy_bytes(np.zeros((100, 200), np.float32)), NPY),  # 2.1 s
    ("/resynthesize", audio_file(np.zeros(48000, np.float32), 24000), {"content-type": "audio/wav"}),  # 2 s
], ids=["mel", "resynthesis"])
async def test_a_streamed_answer_beyond_the_stream_limit_is_413_before_it_begins(
        make_app: AppFactory, path: str, body: bytes, headers: dict[str, str]) -> None:
    """VOCOS_MAX_STREAM_AUDIO_SECONDS below VOCOS_MAX_AUDIO_SECONDS: the whole answer is given, the streamed
    one refused with its status, where it used to answer 200 and break off at the limit."""
    async with make_app(max_stream_audio_seconds=1.0) as app:
        whole = await app.client.post(path, content=body, headers=headers)
        streamed = await app.client.post(path + "?stream=true", content=body, headers=headers)
        assert whole.status_code == 200
        assert streamed.status_code == 413, streamed.status_code
        assert "VOCOS_MAX_STREAM_AUDIO_SECONDS" in streamed.json()["error"]["message"]
        metrics = (await app.client.get("/metrics")).text
        assert 'vocos_streams_active{model="mel"} 0.0' in metrics


@pytest.mark.parametrize(("fmt", "header_bytes"), [("wav16", 44), ("wav32f", 58)])
async def test_the_wav_header_states_the_final_length(app: AppHarness, fmt: str, header_bytes: int) -> None:
    mel = np.zeros((100, 300), np.float32)
    response = await app.client.post(f"/decode/mel?stream=true&format={fmt}", content=npy_bytes(mel), headers=NPY)
    riff = int.from_bytes(response.content[4:8], "little")
    data = int.from_bytes(response.content[header_bytes - 4:header_bytes], "little")
    assert riff == len(response.content) - 8 and data == len(response.content) - header_bytes
    assert "content-length" not in response.headers  # HTTP/1.1: chunked (tests/reliability/test_stream_server.py)
    # The whole answer is the same file: it had libsndfile's header (a float one with a PEAK chunk).
    whole = await app.client.post(f"/decode/mel?format={fmt}", content=npy_bytes(mel), headers=NPY)
    assert whole.content[:header_bytes] == response.content[:header_bytes] and len(whole.content) == riff + 8
    if fmt == "wav32f":  # IEEE float is no PCM: its fmt chunk has the extension size (0), which sox warned of
        assert response.content[12:20] == b"fmt \x12\x00\x00\x00" and response.content[36:38] == b"\x00\x00"


async def test_over_http_1_0_an_answer_has_its_length_and_one_broken_off_is_short_of_it(
        base_settings: Settings, models: dict[str, ServedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP/1.0 has no chunked transfer (nginx proxies with it by default): an answer without a length ends
    where its connection does, so one the server broke off after its headers read as a complete, shorter WAV."""
    served = models["mel"]
    real, steps = served.decode_steps, []

    def fails_after_one_step(*args: Any) -> Any:
        steps.append(1)
        if len(steps) > 1:
            raise RuntimeError("a failed step")
        return real(*args)

    mel = np.random.default_rng(5).standard_normal((100, 3 * STREAMED_PUSH_FRAMES)).astype(np.float32)
    body = npy_bytes(mel)
    async with live_server(base_settings, models) as server:
        monkeypatch.setitem(vars(served), "decode_steps", fails_after_one_step)  # after the warm-up's steps
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /decode/mel?stream=true HTTP/1.0\r\nHost: test\r\nContent-Type: application/x-npy\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        answer = await asyncio.wait_for(reader.read(), 30)  # to the connection's end
        writer.close()
    head, _, content = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert lines[0].split()[1] == "200" and len(steps) == 2
    expected = 44 + 2 * served.num_samples(mel.shape[1])
    assert int(fields["content-length"]) == expected > len(content) > 44  # short: the client can tell


async def test_flac_cannot_be_streamed(app: AppHarness) -> None:
    response = await app.client.post("/decode/mel?stream=true&format=flac", content=npy_bytes(np.zeros((100, 9),
                                     np.float32)), headers=NPY)
    assert response.status_code == 422 and "FLAC cannot be streamed" in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "invalid_parameter"  # a query value, as any other bad one
    # Asked for by Accept alone: HTTP's 406, as for any Accept the server cannot meet.
    response = await app.client.post("/decode/mel?stream=true", content=npy_bytes(np.zeros((100, 9), np.float32)),
                                     headers={**NPY, "accept": "audio/flac"})
    assert response.status_code == 406 and "lists only audio/flac" in response.json()["error"]["message"]


async def test_a_streamed_resynthesis_decodes_its_first_features_before_its_analysis_ends(
        app: AppHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis gives its features span by span (``vocos_core.steps``), and the streamed answer decodes
    each as it comes: its first audio does not wait for the last span of a long upload."""
    served = app.state.model("encodec").served
    events: list[str] = []
    real_analysis, real_steps = served.analysis, served.decode_steps

    def analysis(*args: Any) -> Steps:
        for piece in real_analysis(*args):
            events.append("analysis")
            yield piece

    def decode_steps(*args: Any, **kwargs: Any) -> Any:
        events.append("decode")
        return real_steps(*args, **kwargs)

    monkeypatch.setitem(vars(served), "analysis", analysis)  # setitem: undone by deleting it again
    monkeypatch.setitem(vars(served), "decode_steps", decode_steps)
    upload = audio_file((np.random.default_rng(3).standard_normal(300_000) * 0.1).astype(np.float32), 24000)
    streamed = await app.client.post("/resynthesize?model=encodec&bandwidth_id=2&format=wav32f&stream=true",
                                     content=upload, headers={"content-type": "audio/wav"})
    assert streamed.status_code == 200
    assert events.index("decode") < len(events) - 1 - events[::-1].index("analysis"), events
    monkeypatch.undo()
    whole = await app.client.post("/resynthesize?model=encodec&bandwidth_id=2&format=wav32f", content=upload,
                                  headers={"content-type": "audio/wav"})
    a, b = wav(whole.content)[0], wav(streamed.content)[0]
    assert a.shape == b.shape == (300_000,)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


@pytest.mark.parametrize("leaves_at", ["headers", "wav header"])
async def test_a_client_gone_before_the_body_began_leaves_no_stream_or_analysis_behind(
        make_app: AppFactory, leaves_at: str) -> None:
    """The answer's audio chunks were never started, so their own cleanup could not run: the response
    releases the stream (a slot of MAX_STREAMS) and the analysis (a place in the wait list)."""
    async with make_app() as harness:
        slot = harness.state.slots["encodec"]
        upload = audio_file((np.random.default_rng(3).standard_normal(240_000) * 0.1).astype(np.float32), 24000)
        requests = [{"type": "http.request", "body": upload, "more_body": False}]
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if requests:
                return requests.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == ("http.response.start" if leaves_at == "headers" else "http.response.body"):
                gone.set()  # the client leaves as the answer begins
                await asyncio.sleep(0.2)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/resynthesize", "raw_path": b"/resynthesize",
                 "query_string": b"model=encodec&bandwidth_id=2&stream=true", "root_path": "",
                 "headers": [(b"content-type", b"audio/wav"), (b"host", b"test")],
                 "client": ("127.0.0.1", 5000), "server": ("test", 80)}
        await asyncio.wait_for(harness.app(scope, receive, send), 10)
        await wait_until(lambda: slot.features.waiting == 0 and slot.engine.open_streams == 0, timeout=5)
