"""The WebSocket stream protocol: audio equal to the offline decode in each format and rate, the start
message, and every error with its status, message and close code, as the HTTP API answers it."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
import torch
from stream_helpers import collect, error_of, stream_through

from service.http.app import create_app
from service.runtime.models import ServedModel
from service.settings import Settings
from service.testing import npy_bytes as npy


def test_mel_stream_in_f32_equals_the_offline_decode(client_for: Any, models: dict[str, ServedModel]) -> None:
    mel = np.random.default_rng(0).standard_normal((models["mel"].n_features, 60)).astype(np.float32)
    with client_for().websocket_connect("/stream/mel?format=f32") as ws:
        audio, done = stream_through(ws, mel, 7, "<f4")
    expected = models["mel"].decode_batch([torch.from_numpy(mel)])[0].numpy()
    assert done == {"type": "done", "samples": expected.size}
    np.testing.assert_allclose(audio, expected, atol=1e-5 * np.abs(expected).max())


def test_every_stream_format_the_query_takes_has_an_encoding() -> None:
    """The query's formats (validated by pydantic) and the audio encodings are listed in two places."""
    from typing import get_args

    from service.http.query import StreamFormat
    from service.http.websocket import FORMATS

    assert set(get_args(StreamFormat)) == set(FORMATS)


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


def test_encodec_stream_takes_chunks_as_encodec_encode_returns_them(client_for: Any,
                                                                     models: dict[str, ServedModel]) -> None:
    codes = np.random.default_rng(1).integers(0, 1024, (8, 10))
    with client_for().websocket_connect("/stream/encodec?format=f32") as ws:
        json.loads(ws.receive_text())
        for t in range(10):  # (1, K, 1): one frame of EnCodec's (B, K, T) codes
            ws.send_bytes(npy(codes[None, :, t:t + 1]))
        ws.send_text(json.dumps({"type": "end"}))
        audio, done = collect(ws, "<f4")
    expected = models["encodec"].decode_batch([torch.from_numpy(codes)], [2])[0].numpy()
    assert done["samples"] == audio.size == expected.size
    np.testing.assert_allclose(audio, expected, rtol=0, atol=1e-5)


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


MEL40 = np.random.default_rng(3).uniform(-6, -1, (100, 40)).astype(np.float32)  # a mel the front-end can give


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
    ("/stream/mel?model=", None, 422, "model: got an empty name; name a served model"),
    ("/stream/mel", np.zeros((7, 5), np.float32), 422, "mel bands"),
    ("/stream/mel", b"not npy", 400, ".npy"),
    # a Node Buffer or a browser Blob sends a binary frame: the end message there was "not a .npy file (body)"
    ("/stream/mel", b'{"type":"end"}', 400, 'got {"type": "end"} as a binary message; send it as a text message'),
    ("/stream/mel", np.zeros(4, "<f4").tobytes(), 400,  # raw samples, no header: a message's words, not a body's
     "expected each binary message to be one .npy array (np.save's format, starting with the \\x93NUMPY magic); "
     "got 16 bytes beginning 00 00 00 00 00 00 00 00"),
    ("/stream/mel", "hello", 400, '{"type": "end"}, got \'hello\''),
    ("/stream/mel", '{"type": "end", "flush": false}', 400, 'got \'{"type": "end", "flush": false}\''),
    ("/stream/mel", "x" * 100_000, 400, "got a text message of 100000 characters"),  # refused unparsed
    ("/stream/mel", np.full((100, 5), np.nan, np.float32), 422, "NaN"),
    # after 40 good frames: named as the stream's frame, not the message's (index (0, 0) of its chunk)
    ("/stream/mel", [MEL40, np.full((100, 5), np.nan, np.float32)], 422, "first at index (0, 40)"),
    # held to the model's front-end as a request's mel is: log-mel values no audio gives
    ("/stream/mel", np.full((100, 5), 20.0, np.float32), 422, "above 8.95, the largest log magnitude"),
    ("/stream/mel", np.full((100, 5), -80.0, np.float32), 422, "(a dB-scaled mel"),
    ("/stream/encodec?bandwidth_id=0", np.zeros((8, 5), np.int64), 422, "2 codebooks"),
    ("/stream/encodec", np.zeros((1, 8), np.int64), 422, "(it looks transposed: send the codebooks as rows"),
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
            if isinstance(send, list):  # arrays, one message each
                for array in send:
                    ws.send_bytes(npy(array))
            elif isinstance(send, np.ndarray):
                ws.send_bytes(npy(send))
            elif isinstance(send, bytes):
                ws.send_bytes(send)
            else:
                ws.send_text(send)
        error, code = error_of(ws)
    assert error["status"] == status and code == 4000 + status
    assert fragment in error["message"] and error["request_id"]


@pytest.mark.parametrize("query", ["sample_rate=7999", "sample_rate=16000.5", "sample_rate=1e4", "bandwidth_id=x",
                                   "model=mel&colour=blue", "sample_rate=16000&sample_rate=22050"])
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


@pytest.mark.parametrize("kbps", ["inf", "nan", "7"])
def test_a_bandwidth_no_model_has_is_the_same_error_on_a_stream_as_on_a_request(client_for: Any, kbps: str) -> None:
    client = client_for()
    codes = npy(np.zeros((8, 9), np.int64))
    answer = client.post(f"/decode/encodec?bandwidth={kbps}", content=codes,
                         headers={"content-type": "application/x-npy"}).json()["error"]
    with client.websocket_connect(f"/stream/encodec?bandwidth={kbps}") as ws:
        ws.send_bytes(codes)
        error, code = error_of(ws)
    assert (error["status"], error["error"], code) == (422, answer["type"], 4422) == (422, "invalid_input", 4422)
    assert error["message"] == answer["message"] and f"unknown bandwidth {kbps} kbps" in answer["message"]


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


@pytest.mark.parametrize("path", ["/stream/mel", "/stream/encodec"])
def test_a_plain_http_request_to_a_stream_is_told_to_upgrade(client_for: Any, path: str) -> None:
    """A proxy that drops the Upgrade header sends the handshake on as a plain GET: the router's 404 said
    the path was wrong."""
    answer = client_for().get(f"{path}?format=f32")
    assert (answer.status_code, answer.headers["upgrade"]) == (426, "websocket")
    error = answer.json()["error"]
    assert error["type"] == "upgrade_required" and error["request_id"] == answer.headers["x-request-id"]
    assert error["message"].startswith(f"{path} is a WebSocket endpoint: open it with a WebSocket client")
    assert "a proxy in front must pass both headers on" in error["message"]
