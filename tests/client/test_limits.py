"""A stream message larger than the server takes (VOCOS_MAX_BODY_BYTES here, below 1 MiB) would be refused
by the server's WebSocket layer (close code 1009) while the client is still sending it, a race whose loser sees a
reset connection instead. The server's start message gives the limit; the client splits larger pushes to fit."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.testing import ServerProcess
from vocos_client import AsyncClient, Client, VocosClientError
from vocos_client.session import frame_messages
from vocos_client.wire import npy_bytes

MAX_BODY_BYTES = 200000
SERVER_FLAGS = ("--max-body-bytes", str(MAX_BODY_BYTES))


def test_a_push_larger_than_a_message_may_be_is_split_and_decodes_as_small_pushes(server: ServerProcess) -> None:
    mel = np.random.default_rng(0).standard_normal((100, 1000)).astype(np.float32)  # 400 kB of frames
    with Client(server.url) as client:
        pushed = np.concatenate(list(client.stream_mel_frames([mel[:, i:i + 100] for i in range(0, 1000, 100)],
                                                              format="f32")))
        with client.stream_mel(format="f32") as session:
            assert session.info.max_message_bytes == MAX_BODY_BYTES
            session.send(mel)
            session.end()
            streamed = np.concatenate(list(session))
    np.testing.assert_allclose(streamed, pushed, atol=1e-5 * np.abs(pushed).max())
    assert streamed.size == 999 * 256


def test_the_async_session_splits_as_well(server: ServerProcess) -> None:
    codes = np.random.default_rng(1).integers(0, 1024, (8, 4000))  # 256 kB of int64 codes

    async def run() -> tuple[np.ndarray, np.ndarray]:
        async with AsyncClient(server.url) as client:
            pushed = [chunk async for chunk in client.stream_encodec_frames(
                [codes[:, i:i + 1000] for i in range(0, 4000, 1000)], format="f32")]
            async with client.stream_encodec(format="f32") as session:
                await session.send(codes)
                await session.end()
                return np.concatenate([chunk async for chunk in session]), np.concatenate(pushed)

    streamed, pushed = asyncio.run(run())
    np.testing.assert_allclose(streamed, pushed, atol=1e-5 * np.abs(pushed).max())
    assert streamed.size == 4000 * 320


def test_pieces_fit_the_limit_and_keep_every_frame_in_order() -> None:
    codes = np.arange(8 * 1001).reshape(8, 1001)
    messages = frame_messages(codes, 10000)
    assert len(messages) > 1 and max(map(len, messages)) <= 10000
    pieces = [np.load(io.BytesIO(m)) for m in messages]
    assert all(p.dtype == np.int64 for p in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), codes)
    assert len(frame_messages(codes, None)) == 1  # a server that does not say its limit


def test_frames_of_shape_1_c_t_are_split_too() -> None:
    """(1, K, t), as EnCodec's encode gives codes, is a stream's frame as (K, t) is; it went out whole, and a long
    push of it was closed with 1009 (413 "send the frames in smaller chunks")."""
    codes = np.arange(8 * 1001).reshape(1, 8, 1001)
    messages = frame_messages(codes, 10000)
    assert len(messages) > 1 and max(map(len, messages)) <= 10000
    pieces = [np.load(io.BytesIO(m)) for m in messages]
    assert all(p.shape[:2] == (1, 8) for p in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces, axis=2), codes)
    with pytest.raises(VocosClientError, match=r"one frame is \d+ bytes as a message; the server takes at most 300"):
        frame_messages(np.zeros((1, 100, 3), np.float32), 300)


def test_frames_go_as_the_caller_gave_them_where_a_cast_would_change_them() -> None:
    """As a request's body: booleans stay booleans, uint64 past int64 stays uint64, for the server to
    name what was sent (a float32 cast, a negative number)."""
    for frames in (np.ones((8, 3), bool), np.full((8, 3), 2**63 + 5, np.uint64)):
        (message,) = frame_messages(frames, 10000)
        np.testing.assert_array_equal(np.load(io.BytesIO(message)), frames)
        assert np.load(io.BytesIO(message)).dtype == frames.dtype


def test_one_frame_larger_than_a_message_may_be_is_413_before_sending() -> None:
    with pytest.raises(VocosClientError) as caught:
        frame_messages(np.zeros((100, 3), np.float32), 300)
    assert (caught.value.status, caught.value.error) == (413, "payload_too_large")
    assert "at most 300 (max_message_bytes)" in caught.value.message


def test_a_message_the_websocket_layer_refuses_counts_as_an_error(server: ServerProcess) -> None:
    """Close code 1009 (over max_message_bytes) is the client's error, not a client that left."""
    sample = 'vocos_streams_total{model="mel",outcome="error",transport="websocket"}'
    before = server.metric(sample) if sample in httpx.get(f"{server.url}/metrics").text else 0.0
    with connect(server.url.replace("http", "ws") + "/stream/mel", max_size=None) as ws:
        ws.recv()  # the start message
        with contextlib.suppress(ConnectionClosed):
            ws.send(npy_bytes(np.zeros((100, 1000), np.float32)))  # 400 kB
            ws.recv()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (sample not in httpx.get(f"{server.url}/metrics").text
                                           or server.metric(sample) == before):
        time.sleep(0.05)
    assert server.metric(sample) == before + 1
