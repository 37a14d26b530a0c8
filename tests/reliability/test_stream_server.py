"""Streams against a real ``python -m service`` process: a long ``?stream=true`` decode sends its first
bytes early, in chunks, and one that fails after its headers is cut short, not ended as if whole;
SIGTERM lets an open WebSocket stream finish, and refuses new ones."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websocket

from service.testing import ServerProcess, npy_bytes
from vocos_client import Client, VocosClientError
from vocos_core.testing import write_random_checkpoint

# Frames of a streamed decode that the tiny model cannot finish within a 0.5 s deadline (512 s of audio).
FRAMES_PAST_DEADLINE = 48000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Big enough that a minute of audio takes a while, small enough for CI.
    return write_random_checkpoint(tmp_path_factory.mktemp("stream-mel"), "mel", dim=192, num_layers=4)


@pytest.fixture
def server(checkpoint: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(["--device", "cpu", "--mel-model", str(checkpoint), "--encodec-model", "none"],
                            tmp_path / "server.log", env={"VOCOS_DRAIN_TIMEOUT_S": "30"})
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_a_long_streamed_decode_sends_its_first_audio_early(server: ServerProcess) -> None:
    # 256 s: alone, 128 s gave a first audio at 0.11 of the whole decode's time (bound 0.3), too near on a faster CPU.
    mel = np.random.default_rng(0).standard_normal((100, 24000)).astype(np.float32)
    body, headers = npy_bytes(mel), {"content-type": "application/x-npy"}
    started = time.monotonic()
    whole = httpx.post(f"{server.url}/decode/mel", content=body, headers=headers, timeout=120)
    whole_s = time.monotonic() - started
    started, size, first_audio_s = time.monotonic(), 0, None
    with httpx.stream("POST", f"{server.url}/decode/mel?stream=true", content=body, headers=headers,
                      timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        for piece in response.iter_bytes():
            size += len(piece)
            if first_audio_s is None and size > 44 + 4096:  # past the header: audio samples
                first_audio_s = time.monotonic() - started
    assert size == len(whole.content) == 44 + 2 * (24000 - 1) * 256
    assert first_audio_s is not None and first_audio_s < 0.3 * whole_s, (first_audio_s, whole_s)


def test_a_streamed_decode_past_its_deadline_is_cut_short_and_counted_as_504(server: ServerProcess) -> None:
    # On a fast CPU the tiny model decoded 128 s (12000 frames) within the deadline: the answer came whole.
    mel = np.random.default_rng(1).standard_normal((100, FRAMES_PAST_DEADLINE)).astype(np.float32)
    body = npy_bytes(mel)
    headers = {"content-type": "application/x-npy", "x-request-timeout": "0.5", "x-request-id": "cut-short"}
    size = 0
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(  # the chunked body never ends
            "POST", f"{server.url}/decode/mel?stream=true", content=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200  # the headers left before the deadline
        for piece in response.iter_bytes():
            size += len(piece)
    assert 44 < size < 44 + 2 * (FRAMES_PAST_DEADLINE - 1) * 256
    with Client(server.url) as client:
        client._http.headers["x-request-timeout"] = "0.5"
        with pytest.raises(VocosClientError) as caught, client.decode_mel(mel, stream=True) as chunks:
            list(chunks)
    assert caught.value.status == 0 and caught.value.error == "connection"
    assert f"of {(FRAMES_PAST_DEADLINE - 1) * 256} samples" in caught.value.message and caught.value.request_id
    assert server.metric('vocos_requests_total{endpoint="/decode/mel",status="504"}') == 2
    assert 'vocos_requests_total{endpoint="/decode/mel",status="200"}' not in httpx.get(f"{server.url}/metrics").text
    log = server.output()
    assert "request cut-short: 504" in log and "broke off" in log
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_a_client_that_leaves_a_streamed_decode_counts_as_disconnected(server: ServerProcess) -> None:
    mel = np.random.default_rng(2).standard_normal((100, 12000)).astype(np.float32)
    with httpx.stream("POST", f"{server.url}/decode/mel?stream=true", content=npy_bytes(mel),
                      headers={"content-type": "application/x-npy"}, timeout=60) as response:
        next(response.iter_bytes())  # the header and the first audio, then the client hangs up
    sample = 'vocos_streams_total{model="mel",outcome="disconnected",transport="http"}'
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sample not in httpx.get(f"{server.url}/metrics").text:
        time.sleep(0.1)
    assert server.metric(sample) == 1
    assert server.metric('vocos_streams_active{model="mel"}') == 0
    assert server.metric('vocos_requests_total{endpoint="/decode/mel",status="499"}') == 1  # not a 200


def test_a_streamed_answer_holds_the_byte_budget_only_for_what_is_unsent(checkpoint: Path, tmp_path: Path) -> None:
    process = ServerProcess(["--device", "cpu", "--mel-model", str(checkpoint), "--encodec-model", "none",
                             "--max-body-bytes", str(8 * 2**20), "--max-inflight-bytes", str(12 * 2**20)],
                            tmp_path / "server.log")
    try:
        process.wait_ready()
        mel = np.random.default_rng(3).standard_normal((100, 12000)).astype(np.float32)  # 12 MiB as wav32f
        small = npy_bytes(mel[:, :20])
        headers = {"content-type": "application/x-npy"}
        received, answers = 0, []
        with httpx.stream("POST", f"{process.url}/decode/mel?stream=true&format=wav32f", content=npy_bytes(mel),
                          headers=headers, timeout=60) as response:
            for piece in response.iter_bytes():
                received += len(piece)
                if not answers and received > 10 * 2**20:  # most of it sent: it holds no budget any more
                    answers.append(httpx.post(f"{process.url}/decode/mel", content=small, headers=headers,
                                              timeout=30).status_code)
        assert received > 4 * (12000 - 1) * 256 and answers == [200]  # all of it came, and the request got in
    finally:
        process.stop()


def test_sigterm_lets_an_open_stream_finish_and_refuses_new_streams(server: ServerProcess) -> None:
    url = server.url.replace("http://", "ws://") + "/stream/mel?format=f32"
    ws = websocket.create_connection(url, timeout=30)
    assert json.loads(ws.recv())["type"] == "start"
    chunk = npy_bytes(np.zeros((100, 20), np.float32))
    ws.send_binary(chunk)
    server.process.send_signal(15)
    time.sleep(1.0)  # the drain has begun: no new connections
    with pytest.raises((ConnectionError, websocket.WebSocketException, OSError)):
        websocket.create_connection(url, timeout=5).recv()
    for _ in range(5):
        ws.send_binary(chunk)
    ws.send(json.dumps({"type": "end"}))
    samples = 0
    while True:
        message = ws.recv()
        if isinstance(message, bytes):
            samples += len(message) // 4
            continue
        done = json.loads(message)
        break
    assert done == {"type": "done", "samples": samples} and samples == (120 - 1) * 256
    assert server.process.wait(30) == 0
