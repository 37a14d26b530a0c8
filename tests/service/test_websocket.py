"""The WebSocket stream protocol: audio equal to the offline decode, every error with its status and
close code, authentication, the per-stream limits, disconnects, drain, and the stream metrics."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import websockets
from fastapi.testclient import TestClient
from service_helpers import live_server, settings_with
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from service.http.app import create_app
from service.http.state import state_of
from service.runtime.models import ServedModel
from service.settings import Settings


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture
def client_for(base_settings: Settings, models: dict[str, ServedModel]) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(settings_with(base_settings, **overrides), models))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def collect(ws: WebSocketTestSession, dtype: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Audio messages until the final text message (done or error)."""
    pieces = []
    while True:
        message = ws.receive()
        if message.get("bytes") is not None:
            pieces.append(np.frombuffer(message["bytes"], dtype))
        elif message.get("text") is not None:
            return (np.concatenate(pieces) if pieces else np.zeros(0, dtype)), json.loads(message["text"])
        else:
            raise AssertionError(f"unexpected message {message}")


def stream_through(ws: WebSocketTestSession, grid: np.ndarray, size: int, dtype: str) -> tuple[np.ndarray, dict]:
    start = json.loads(ws.receive_text())
    assert start["type"] == "start"
    for t in range(0, grid.shape[1], size):
        ws.send_bytes(npy(grid[:, t:t + size]))
    ws.send_text(json.dumps({"type": "end"}))
    return collect(ws, dtype)


def error_of(ws: WebSocketTestSession) -> tuple[dict[str, Any], int]:
    """The error message and the close code that follows it."""
    while True:
        message = ws.receive()
        if message.get("text") and json.loads(message["text"])["type"] == "error":
            error = json.loads(message["text"])
            break
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    return error, closed.value.code


def test_mel_stream_in_f32_equals_the_offline_decode(client_for: Any, models: dict[str, ServedModel]) -> None:
    mel = np.random.default_rng(0).standard_normal((models["mel"].n_features, 60)).astype(np.float32)
    with client_for().websocket_connect("/stream/mel?format=f32") as ws:
        audio, done = stream_through(ws, mel, 7, "<f4")
    expected = models["mel"].decode_batch([torch.from_numpy(mel)])[0].numpy()
    assert done == {"type": "done", "samples": expected.size}
    np.testing.assert_allclose(audio, expected, atol=1e-5 * np.abs(expected).max())


def test_the_start_message_gives_the_largest_message_the_server_takes(client_for: Any,
                                                                      base_settings: Settings) -> None:
    """1 MiB, or the body limit if smaller: a message is held whole outside the byte budget before the
    stream reads it, and at the 64 MiB body limit 64 streams could hold 4 GiB."""
    from service.http.server import uvicorn_config

    with client_for(max_body_bytes=123456).websocket_connect("/stream/mel") as ws:
        start = json.loads(ws.receive_text())
    assert start["max_message_bytes"] == 123456
    with client_for().websocket_connect("/stream/mel") as ws:
        start = json.loads(ws.receive_text())
    assert base_settings.max_body_bytes > 2**20 and start["max_message_bytes"] == 2**20
    assert uvicorn_config(create_app(base_settings, {}), base_settings).ws_max_size == 2**20


def test_encodec_stream_in_pcm16_infers_the_bandwidth_from_k(client_for: Any, models: dict[str, ServedModel]) -> None:
    served = models["encodec"]
    codes = np.random.default_rng(1).integers(0, 1024, (8, 40))
    with client_for().websocket_connect("/stream/encodec") as ws:
        audio, done = stream_through(ws, codes, 9, "<i2")
    expected = served.decode_batch([torch.from_numpy(codes)], [2])[0].numpy()
    assert done["samples"] == expected.size == audio.size
    assert np.abs(audio / 32767 - np.clip(expected, -1, 1)).max() <= 2 / 32767


def test_a_low_latency_stream_sends_its_audio_sooner_and_as_long(client_for: Any,
                                                                  models: dict[str, ServedModel]) -> None:
    served = models["mel"]
    mel = np.random.default_rng(3).standard_normal((served.n_features, 60)).astype(np.float32)
    exact = served.lookahead
    client = client_for()
    with client.websocket_connect("/stream/mel?format=f32&lookahead_frames=1") as ws:
        start = json.loads(ws.receive_text())
        assert 'vocos_streams_low_latency_active{model="mel"} 1.0' in client.get("/metrics").text
        assert start["lookahead_frames"] == 1 and start["exact"] is False
        assert start["lookahead_ms"] < exact.ms
        ws.send_bytes(npy(mel[:, :30]))
        first = np.frombuffer(ws.receive_bytes(), "<f4")  # 30 frames in: all but the last one's audio out
        held_back = round(start["lookahead_ms"] * served.sample_rate / 1000)
        assert first.size == 30 * served.model.hop_length - held_back
        ws.send_bytes(npy(mel[:, 30:]))
        ws.send_text(json.dumps({"type": "end"}))
        rest, done = collect(ws, "<f4")
    expected = served.decode_batch([torch.from_numpy(mel)])[0].numpy()
    assert done["samples"] == first.size + rest.size == expected.size
    assert 'vocos_streams_low_latency_active{model="mel"} 0.0' in client.get("/metrics").text
    with client_for().websocket_connect("/stream/mel") as ws:
        start = json.loads(ws.receive_text())
    assert start["exact"] is True and start["lookahead_frames"] == exact.frames


def test_sample_rate_resamples_the_stream(client_for: Any, models: dict[str, ServedModel]) -> None:
    mel = np.random.default_rng(2).standard_normal((models["mel"].n_features, 100)).astype(np.float32)
    with client_for().websocket_connect("/stream/mel?sample_rate=16000") as ws:
        assert json.loads(ws.receive_text())["sample_rate"] == 16000
        ws.send_bytes(npy(mel))
        ws.send_text('{"type": "end"}')
        audio, done = collect(ws, "<i2")
    assert done["samples"] == audio.size
    assert abs(audio.size - models["mel"].num_samples(100) * 2 / 3) <= 2


@pytest.mark.parametrize(("path", "send", "status", "fragment"), [
    ("/stream/mel?format=mp3", None, 422, "format: Input should be 'pcm16' or 'f32'"),
    ("/stream/mel?sample_rat=16000", None, 422, "'sample_rat': unknown query parameter of /stream/mel"),
    ("/stream/mel?model=nope", None, 404, "nope"),
    ("/stream/mel?model=encodec", None, 422, "needs a model of kind mel"),
    ("/stream/encodec?bandwidth_id=9", None, 422, "bandwidth_id"),
    # As /decode/mel, which takes no bandwidth (an empty one was taken as absent here)
    ("/stream/mel?bandwidth_id=2", None, 422, "'bandwidth_id': unknown query parameter of /stream/mel"),
    ("/stream/mel?bandwidth_id=", None, 422, "'bandwidth_id': unknown query parameter of /stream/mel"),
    ("/stream/mel?sample_rate=", None, 422, "sample_rate: "),  # an empty value is a value, as over HTTP
    ("/stream/mel?model=", None, 404, "no model named ''"),
    ("/stream/mel", np.zeros((7, 5), np.float32), 422, "mel bands"),
    ("/stream/mel", b"not npy", 400, ".npy"),
    ("/stream/mel", "hello", 400, '{"type": "end"}, got \'hello\''),
    ("/stream/mel", "x" * 100_000, 400, "got a text message of 100000 characters"),  # refused unparsed
    ("/stream/mel", np.full((100, 5), np.nan, np.float32), 422, "NaN"),
    # held to the model's front-end as a request's mel is: log-mel values no audio gives
    ("/stream/mel", np.full((100, 5), 20.0, np.float32), 422, "above 8.95, the largest log magnitude"),
    ("/stream/mel", np.full((100, 5), -80.0, np.float32), 422, "(a dB-scaled mel"),
    ("/stream/encodec?bandwidth_id=0", np.zeros((8, 5), np.int64), 422, "2 codebooks"),
    ("/stream/mel?lookahead_frames=99", None, 422, "lookahead_frames must be an integer in 0..6"),
    ("/stream/mel?lookahead_frames=-1", None, 422, "got -1"),
    ("/stream/mel?lookahead_frames=2.5", None, 422, "lookahead_frames: Input should be a valid integer"),
    ("/stream/mel?lookahead_frames=soon", None, 422, "lookahead_frames: Input should be a valid integer"),
    ("/stream/encodec?lookahead_frames=99", None, 422, "lookahead_frames must be an integer in 0.."),
])
def test_errors_have_the_http_status_message_and_close_code(client_for: Any, path: str, send: Any, status: int,
                                                             fragment: str) -> None:
    with client_for().websocket_connect(path) as ws:
        if send is not None:
            json.loads(ws.receive_text())  # start
            if isinstance(send, np.ndarray):
                ws.send_bytes(npy(send))
            elif isinstance(send, bytes):
                ws.send_bytes(send)
            else:
                ws.send_text(send)
        error, code = error_of(ws)
    assert error["status"] == status and code == 4000 + status
    assert fragment in error["message"] and error["request_id"]


@pytest.mark.parametrize("query", ["sample_rate=7999", "sample_rate=16000.5", "sample_rate=1e4", "bandwidth_id=x",
                                   "model=mel&colour=blue"])
def test_a_bad_query_parameter_is_the_same_error_on_a_stream_as_on_a_request(client_for: Any, query: str) -> None:
    client = client_for()
    path = "/decode/encodec" if "bandwidth" in query else "/decode/mel"
    answer = client.post(f"{path}?{query}", content=npy(np.zeros((100, 9), np.float32)),
                         headers={"content-type": "application/x-npy"}).json()["error"]
    with client.websocket_connect(f"{path.replace('decode', 'stream')}?{query}") as ws:
        error, code = error_of(ws)
    assert (error["status"], error["error"], code) == (422, answer["type"], 4422) == (422, "invalid_parameter", 4422)
    # the same words, but for the parameters each endpoint takes
    same = answer["message"].replace(path, path.replace("decode", "stream")).split("; it takes")[0]
    assert error["message"].split("; it takes")[0] == same


@pytest.mark.parametrize("path", ["/stream/mel", "/stream/encodec", "/stream/encodec?bandwidth_id=1"])
def test_a_stream_ended_before_any_frame_is_422_as_an_empty_request(client_for: Any, path: str) -> None:
    with client_for().websocket_connect(path) as ws:
        assert json.loads(ws.receive_text())["type"] == "start"
        ws.send_text(json.dumps({"type": "end"}))
        error, code = error_of(ws)
    assert (error["status"], code) == (422, 4422) and "before any frames arrived" in error["message"]


def test_a_stream_too_short_to_give_audio_is_422_as_such_a_request(client_for: Any,
                                                                     models: dict[str, ServedModel]) -> None:
    client = client_for()
    one = np.zeros((models["mel"].n_features, 1), np.float32)
    request = client.post("/decode/mel", content=npy(one), headers={"content-type": "application/x-npy"})
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(one))
        ws.send_text(json.dumps({"type": "end"}))
        error, code = error_of(ws)
    assert (error["status"], code, request.status_code) == (422, 4422, 422)
    assert error["message"] == request.json()["error"]["message"] == \
        "1 frame(s) give no audio with the mel model; send at least 2"


def test_a_streams_request_id_is_the_clients_when_sane_else_a_fresh_one(client_for: Any) -> None:
    client, ids = client_for(), []
    for given in ("tts-42.a:b", "<script>" + "A" * 3000, None, None):
        headers = {"X-Request-Id": given} if given else {}
        with client.websocket_connect("/stream/mel?model=nope", headers=headers) as ws:
            ids.append(error_of(ws)[0]["request_id"])
    assert ids[0] == "tts-42.a:b"
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids[1:]) and len(set(ids)) == 4


def test_streams_need_the_api_key_when_the_server_has_keys(client_for: Any) -> None:
    client = client_for(api_keys="k1")
    with client.websocket_connect("/stream/mel") as ws:
        error, code = error_of(ws)
    assert (error["status"], code) == (401, 4401)
    with client.websocket_connect("/stream/mel", headers={"Authorization": "Bearer k1"}) as ws:
        assert json.loads(ws.receive_text())["type"] == "start"


@pytest.mark.parametrize(("first_path", "second_path"), [
    ("/stream/mel", "/stream/mel"),
    # An EnCodec stream without a bandwidth opens on its first chunk; it is refused before sending one.
    ("/stream/encodec?bandwidth_id=0", "/stream/encodec"),
    # ... and holds its place from then on: a second one is refused while the first has sent nothing.
    ("/stream/encodec", "/stream/encodec"),
])
def test_the_concurrent_stream_limit_answers_503_with_a_close_code(client_for: Any, first_path: str,
                                                                   second_path: str) -> None:
    client = client_for(max_streams=1)
    with client.websocket_connect(first_path) as first:
        assert json.loads(first.receive_text())["type"] == "start"
        with client.websocket_connect(second_path) as second:
            error, code = error_of(second)
    assert (error["status"], error["error"], code) == (503, "too_many_streams", 4503)
    assert error["message"].endswith("streams open, its limit (VOCOS_MAX_STREAMS)")
    assert isinstance(error["retry_after"], int) and error["retry_after"] >= 1  # the HTTP answer's Retry-After


def test_streams_refused_before_they_begin_are_counted_by_status(client_for: Any) -> None:
    """A refused stream (limit, key, model, parameter) left no trace in any metric."""
    client = client_for(max_streams=1, api_keys="k1")
    key = {"Authorization": "Bearer k1"}
    with client.websocket_connect("/stream/mel", headers=key) as first:
        assert json.loads(first.receive_text())["type"] == "start"
        for path, headers in (("/stream/mel", key), ("/stream/mel", {}), ("/stream/encodec?model=nope", key),
                              ("/stream/mel?nope=1", key)):
            with client.websocket_connect(path, headers=headers) as refused:
                error_of(refused)
    metrics = client.get("/metrics", headers=key).text
    for endpoint, status in (("/stream/mel", 503), ("/stream/mel", 401), ("/stream/encodec", 404),
                             ("/stream/mel", 422)):
        assert f'vocos_streams_refused_total{{endpoint="{endpoint}",status="{status}"}} 1.0' in metrics, status
    assert 'vocos_streams_refused_total{endpoint="/stream/encodec",status="503"} 0.0' in metrics


def test_a_stream_longer_than_its_audio_limit_is_refused(client_for: Any, models: dict[str, ServedModel]) -> None:
    client = client_for(max_stream_audio_seconds=0.5)
    mel = np.zeros((models["mel"].n_features, 30), np.float32)  # 30 frames of 256 samples: 0.32 s each push
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(mel))
        ws.send_bytes(npy(mel))
        error, code = error_of(ws)
    assert (error["status"], code) == (413, 4413) and "VOCOS_MAX_STREAM_AUDIO_SECONDS" in error["message"]


def test_a_quiet_stream_is_closed_when_its_open_time_runs_out(client_for: Any,
                                                               models: dict[str, ServedModel]) -> None:
    """VOCOS_MAX_STREAM_DURATION_S holds a stream that sends nothing more too, not only its next frames: it
    could stay open up to the duration plus the idle timeout."""
    client = client_for(max_stream_duration_s=0.3, stream_idle_timeout_s=30)
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(np.zeros((models["mel"].n_features, 30), np.float32)))
        started = time.monotonic()
        error, code = error_of(ws)
    assert (error["status"], code) == (413, 4413) and "VOCOS_MAX_STREAM_DURATION_S" in error["message"]
    assert time.monotonic() - started < 5


def test_an_idle_stream_is_closed_with_408(client_for: Any) -> None:
    with client_for(stream_idle_timeout_s=0.2).websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        error, code = error_of(ws)
    assert (error["status"], code) == (408, 4408)


def test_a_client_that_leaves_mid_stream_frees_its_stream(client_for: Any, models: dict[str, ServedModel]) -> None:
    client = client_for()
    state = state_of(client.app)
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(np.zeros((models["mel"].n_features, 20), np.float32)))
        assert state.slots["mel"].engine.open_streams == 1
    client.get("/healthz")  # lets the server side see the disconnect
    metrics = client.get("/metrics").text
    assert state.slots["mel"].engine.open_streams == 0
    assert 'vocos_streams_total{model="mel",outcome="disconnected",transport="websocket"} 1.0' in metrics
    assert 'vocos_streams_active{model="mel"} 0.0' in metrics


def test_a_draining_server_refuses_new_streams(client_for: Any) -> None:
    client = client_for()
    state_of(client.app).draining = True
    with client.websocket_connect("/stream/mel") as ws:
        error, code = error_of(ws)
    assert (error["status"], code, error["retry_after"]) == (503, 4503, 1)


def test_a_stream_idle_at_the_drain_deadline_ends_with_503(client_for: Any) -> None:
    client = client_for(drain_timeout_s=0.3)
    with client.websocket_connect("/stream/mel") as ws:
        assert json.loads(ws.receive_text())["type"] == "start"
        client.portal.call(state_of(client.app).begin_drain)  # type: ignore[union-attr]
        error, code = error_of(ws)  # the client sends nothing: the deadline ends the wait
    assert (error["status"], error["error"], code) == (503, "unavailable", 4503)
    assert "VOCOS_DRAIN_TIMEOUT_S" in error["message"]


def test_stream_metrics_after_a_stream(client_for: Any, models: dict[str, ServedModel]) -> None:
    client = client_for()
    mel = np.zeros((models["mel"].n_features, 40), np.float32)
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        time.sleep(0.5)  # a stream opened before its TTS has frames: first audio counts from the first frames
        ws.send_bytes(npy(mel))
        ws.send_text(json.dumps({"type": "end"}))
        audio, _ = collect(ws, "<i2")
    metrics = client.get("/metrics").text
    assert 'vocos_streams_total{model="mel",outcome="ok",transport="websocket"} 1.0' in metrics
    first = next(m for m in metrics.splitlines() if m.startswith('vocos_stream_first_audio_seconds_sum{model="mel"}'))
    assert float(first.split()[-1]) < 0.4, first
    seconds = next(m for m in metrics.splitlines() if m.startswith('vocos_audio_seconds_total{model="mel"}'))
    assert float(seconds.split()[-1]) == pytest.approx(audio.size / 24000)  # stream audio counts, as made
    for name in ("vocos_stream_chunk_latency_seconds_count", "vocos_stream_first_audio_seconds_count",
                 "vocos_stream_realtime_factor_count", "vocos_stream_batch_size_count"):
        line = next(m for m in metrics.splitlines() if m.startswith(f'{name}{{model="mel"}}'))
        assert float(line.split()[-1]) >= 1, line


def test_a_stream_fed_slower_than_real_time_counts_one_underrun(client_for: Any,
                                                                 models: dict[str, ServedModel]) -> None:
    client = client_for()
    mel = np.zeros((models["mel"].n_features, 40), np.float32)  # 0.43 s of audio per push
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        for pause in (0.0, 0.0, 1.2, 1.2):  # real time at first, then a gap longer than the audio sent
            time.sleep(pause)
            ws.send_bytes(npy(mel))
            assert ws.receive_bytes()
        ws.send_text(json.dumps({"type": "end"}))
        collect(ws, "<i2")
    metrics = client.get("/metrics").text
    # the listener ran dry once (the second gap finds it still behind: the same underrun, not a new one)
    assert 'vocos_stream_underruns_total{model="mel"} 1.0' in metrics


def test_a_refused_stream_mel_counts_as_an_input_warning(client_for: Any) -> None:
    client = client_for()
    with client.websocket_connect("/stream/mel") as ws:
        json.loads(ws.receive_text())
        ws.send_bytes(npy(np.full((100, 5), -80.0, np.float32)))
        error, _ = error_of(ws)
    assert error["status"] == 422
    assert 'vocos_input_warnings_total{cause="db_scaled",model="mel"} 1.0' in client.get("/metrics").text


def test_chunks_that_arrive_during_a_step_go_into_the_next_step_together(
        client_for: Any, models: dict[str, ServedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    served = models["mel"]
    real = served.decode_steps
    calls: list[list[tuple[int, bool]]] = []
    release = threading.Event()

    def held(states: Any, chunks: Any, final: Any, guess: Any = None) -> Any:
        calls.append([(int(c.shape[-1]), bool(f)) for c, f in zip(chunks, final, strict=True)])
        if len(calls) == 1:
            release.wait(10)  # the first step computes until every other chunk is in
        return real(states, chunks, final, guess)

    client = client_for()
    while client.get("/readyz").status_code != 200:  # the warm-up's own stream steps come first
        time.sleep(0.01)
    monkeypatch.setitem(vars(served), "decode_steps", held)  # setitem: undone by deleting it again
    grid = np.random.default_rng(3).standard_normal((served.n_features, 30)).astype(np.float32)
    with client.websocket_connect("/stream/mel?format=f32") as ws:
        ws.receive_text()
        for t in range(0, 30, 5):
            ws.send_bytes(npy(grid[:, t:t + 5]))
        ws.send_text(json.dumps({"type": "end"}))
        time.sleep(0.5)  # the server reads them while the first step is held
        release.set()
        audio, done = collect(ws, "<f4")
    # Six chunk messages and the end in two steps: the first chunk, then the other five with the end.
    assert calls == [[(5, False)], [(25, True)]]
    expected = served.decode_batch([torch.from_numpy(grid)])[0].numpy()
    assert done["samples"] == audio.size == expected.size
    assert float(np.abs(audio - expected).max()) <= 1e-5 * float(np.abs(expected).max())


@pytest.mark.asyncio
async def test_the_server_never_negotiates_permessage_deflate(base_settings: Settings,
                                                              models: dict[str, ServedModel]) -> None:
    # websockets offers permessage-deflate by default; float frames and audio would not compress.
    async with live_server(base_settings, models) as server, \
            websockets.connect(f"ws://127.0.0.1:{server.port}/stream/mel") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert json.loads(await ws.recv())["type"] == "start"


@pytest.mark.parametrize(("bad", "status"), [
    ("hello", 400), (b"not npy", 400),
    (npy(np.zeros((7, 5), np.float32)), 422), (npy(np.full((100, 5), np.nan, np.float32)), 422),  # valid .npy
], ids=["text", "not-npy", "wrong-bands", "nan"])
def test_chunks_read_before_a_bad_message_are_answered_first(client_for: Any, models: dict[str, ServedModel],
                                                            bad: str | bytes, status: int) -> None:
    served = models["mel"]
    grid = np.random.default_rng(4).standard_normal((served.n_features, 40)).astype(np.float32)
    with client_for().websocket_connect("/stream/mel?format=f32") as ws:
        ws.receive_text()
        ws.send_bytes(npy(grid[:, :20]))
        ws.send_bytes(npy(grid[:, 20:]))
        ws.send_text(bad) if isinstance(bad, str) else ws.send_bytes(bad)
        audio, error = collect(ws, "<f4")
    assert error["type"] == "error" and error["status"] == status
    # The final samples of 40 frames, whichever steps they took: nothing of the two chunks is lost.
    expected = served.decode_batch([torch.from_numpy(grid)])[0].numpy()[:audio.size]
    assert audio.size == max(0, 40 * served.model.hop_length - served.lookahead.samples)
    assert float(np.abs(audio - expected).max()) <= 1e-5 * float(np.abs(expected).max())


@pytest.mark.asyncio
async def test_read_ahead_pauses_once_its_byte_budget_waits() -> None:
    from service.http.websocket import _Inbox

    class Flooding:  # a client that sends 1 MB messages as fast as it is read
        def __init__(self) -> None:
            self.read = 0

        async def receive(self) -> dict[str, Any]:
            self.read += 1
            return {"type": "websocket.receive", "bytes": b"\0" * 2**20}

    from service.http.inflight import InflightBytes

    client = Flooding()
    never_too_long = types.SimpleNamespace(open_until=float("inf"))
    server_budget = InflightBytes(2**30)
    inbox = _Inbox(client, idle_s=5, stream=never_too_long, budget=server_budget,  # type: ignore[arg-type]
                   max_bytes=3 * 2**20)
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert client.read == 3 and inbox.waiting_bytes == 3 * 2**20  # paused at the read-ahead's bytes
        assert server_budget.held == 3 * 2**20  # waiting, they count against new requests as bodies do
        assert len(await inbox.take()) == 3 and inbox.waiting_bytes == 0 == server_budget.held
        for _ in range(20):
            await asyncio.sleep(0)
        assert client.read == 6 and server_budget.held == 3 * 2**20
    finally:
        inbox.close()
    assert server_budget.held == 0  # what still waited is released with the stream


@pytest.mark.asyncio
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_a_message_that_meets_the_inbox_close_is_not_counted_after_it(turns: int) -> None:
    """Before Python 3.12 wait_for drops a cancellation that lands as its receive is done: the reader went
    on, and counted bytes in the server's budget after close had released the stream's, for good."""
    from service.http.inflight import InflightBytes
    from service.http.websocket import _Inbox

    class OneMessage:
        def __init__(self) -> None:
            self.pending: asyncio.Future[dict[str, Any]] | None = None

        async def receive(self) -> dict[str, Any]:
            self.pending = asyncio.get_running_loop().create_future()
            return await self.pending

    client, budget = OneMessage(), InflightBytes(2**30)
    inbox = _Inbox(client, idle_s=30, stream=types.SimpleNamespace(open_until=float("inf")),  # type: ignore[arg-type]
                   budget=budget)
    for _ in range(5):
        await asyncio.sleep(0)
    assert client.pending is not None
    client.pending.set_result({"type": "websocket.receive", "bytes": b"\0" * 2**20})  # a chunk arrives...
    for _ in range(turns):
        await asyncio.sleep(0)
    inbox.close()  # ...as the conversation ends
    for _ in range(10):
        await asyncio.sleep(0)
    assert budget.held == 0


class SlowSteps(ServedModel):
    """A served model whose stream steps take 50 ms each and are counted."""

    def __init__(self, base: ServedModel) -> None:
        self.__dict__.update(base.__dict__)
        self.steps = 0

    def decode_steps(self, states: Any, chunks: Any, final: Any, guess: Any = None) -> list[torch.Tensor]:
        self.steps += 1
        time.sleep(0.05)
        return super().decode_steps(states, chunks, final, guess)


@pytest.mark.asyncio
@pytest.mark.parametrize("ended", [False, True])
async def test_a_client_that_leaves_while_its_chunk_computes_stops_it(base_settings: Settings,
                                                                      models: dict[str, ServedModel],
                                                                      ended: bool) -> None:
    """Also after its end message: the server still watches for the client's disconnect while the last
    chunks compute."""
    slow = SlowSteps(models["mel"])
    frames = 8 * 256  # five messages of 8 engine steps each (2 s in all), within the 1 MiB a message may be
    async with live_server(base_settings, {**models, "mel": slow}) as server:
        engine = state_of(server.app).slots["mel"].engine
        slow.steps = 0  # not the warm-up's
        ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/stream/mel", max_size=None)
        await ws.recv()
        for _ in range(5):
            await ws.send(npy(np.zeros((slow.n_features, frames), np.float32)))
        if ended:
            await ws.send(json.dumps({"type": "end"}))
        while slow.steps == 0:
            await asyncio.sleep(0.01)
        ws.transport.abort()  # the client is gone, without a goodbye
        left = time.monotonic()
        while engine.open_streams and time.monotonic() - left < 5:
            await asyncio.sleep(0.01)
        freed_s = time.monotonic() - left
        await asyncio.sleep(0.3)
        steps = slow.steps
    assert engine.open_streams == 0 and freed_s < 1.0, freed_s  # against about 2 s had the steps gone on
    assert steps < 10  # the rest of the 40 steps were not run


@pytest.mark.asyncio
@pytest.mark.parametrize(("messages", "frames"), [(12, 2500), (40, 2000)])
async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(base_settings: Settings,
                                                                            models: dict[str, ServedModel],
                                                                            messages: int, frames: int) -> None:
    """Without a bound, the audio of a client that reads nothing would pile up in the server's memory
    (answers that uvicorn's send takes at once below its buffer's high-water mark), or the server's next
    send would wait for ever (many 1 MB answers: above it, uvicorn's send waits), its stream held open."""
    settings = settings_with(base_settings, send_timeout_s=1.0)
    async with live_server(settings, models) as server:
        engine = state_of(server.app).slots["mel"].engine
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # a client that never reads
        writer.write(b"GET /stream/mel HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        payload = npy(np.zeros((models["mel"].n_features, frames), np.float32))  # within the 1 MiB of a message
        mask = b"\0\0\0\0"  # a client's frames are masked; a zero key leaves the payload as it is
        for _ in range(messages):  # written into asyncio's buffer, not waited for: the server stops reading
            writer.write(bytes([0x82, 0x80 | 127]) + len(payload).to_bytes(8, "big") + mask + payload)
        started = time.monotonic()
        while engine.open_streams == 0 and time.monotonic() - started < 10:  # until the stream is open
            await asyncio.sleep(0.01)
        while engine.open_streams and time.monotonic() - started < 30:
            await asyncio.sleep(0.05)
        freed_s = time.monotonic() - started
        metrics = (await server.client.get("/metrics")).text
        writer.close()
    assert engine.open_streams == 0 and freed_s < 15, freed_s
    assert 'vocos_streams_total{model="mel",outcome="disconnected",transport="websocket"} 1.0' in metrics


def test_pings_go_unanswered_while_the_client_leaves_what_was_sent_unread() -> None:
    """RFC 6455 lets a server answer only the latest unanswered ping: a client that pings and reads nothing
    grew the server's memory by a pong per ping."""
    from wsproto.events import Ping

    from service.http.server import PONG_BACKLOG_BYTES, AbortableWSProtocol

    class Transport:
        def __init__(self, unsent: int) -> None:
            self.unsent, self.written = unsent, b""

        def get_write_buffer_size(self) -> int:
            return self.unsent

        def write(self, data: bytes) -> None:
            self.written += data

    protocol = AbortableWSProtocol.__new__(AbortableWSProtocol)  # only what handle_ping uses
    protocol.conn = types.SimpleNamespace(send=lambda event: b"pong:" + bytes(event.payload))  # type: ignore
    for unsent, answered in ((0, True), (PONG_BACKLOG_BYTES + 1, False)):
        protocol.transport = Transport(unsent)  # type: ignore[assignment]
        protocol.handle_ping(Ping(payload=b"hi"))
        assert (protocol.transport.written == b"pong:hi") is answered  # type: ignore[attr-defined]
