"""A server that stops reading (stopped, overloaded, or the network between broke) bounds a stream's send by the
client's timeout: websockets' sync send has no timeout of its own, and blocked in sendall for ever while holding
the connection's lock, so that close() and the keepalive ping waited for ever too (the frames loop never
returned); the async send waited for websockets' keepalive to give up, 40 s and more."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from websockets.sync.server import ServerConnection, serve

from vocos_client import AsyncClient, Client, RetryPolicy, VocosClientError

START = json.dumps({"type": "start", "model": "mel", "sample_rate": 24000, "format": "f32", "lookahead_frames": 6,
                    "lookahead_ms": 64.0, "hop_length": 256})
FRAMES = np.zeros((100, 2000), np.float32)  # 800 kB a message: the socket's buffers fill within a few
TIMEOUT = 1.0
# Bounded, not instant: after the send's timeout, closing may wait out websockets' close timeout (10 s) when the
# close handshake went out before the transport gave up. Before the fix these waited for ever (or 40 s and more).
BOUND_S = TIMEOUT + 10.0 + 5.0


@pytest.fixture
def deaf_server() -> Iterator[str]:
    """Sends the start message, then reads nothing: websockets stops reading the socket once its queue is full."""
    release = threading.Event()

    def handler(connection: ServerConnection) -> None:
        connection.send(START)
        release.wait(30)

    with serve(handler, "127.0.0.1", 0, max_size=None, max_queue=1, compression=None, close_timeout=1) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        finally:
            release.set()
            server.shutdown()
            thread.join(10)


def _assert_timed_out(error: VocosClientError) -> None:
    assert (error.status, error.error) == (0, "timeout")


def test_a_sync_send_to_a_server_that_reads_nothing_times_out(deaf_server: str) -> None:
    started = time.monotonic()
    with Client(deaf_server, timeout=TIMEOUT, retry=RetryPolicy(retries=0)) as client, \
            pytest.raises(VocosClientError) as caught, client.stream_mel() as session:
        for _ in range(1000):
            session.send(FRAMES)
    _assert_timed_out(caught.value)
    assert "did not take a message within 1.0 s" in caught.value.message
    assert time.monotonic() - started < BOUND_S


def test_a_sync_frames_loop_with_a_server_that_reads_nothing_ends(deaf_server: str) -> None:
    """The loop's receive timed out, then closing the stream waited for the sender's lock for ever."""
    started = time.monotonic()
    with Client(deaf_server, timeout=TIMEOUT, retry=RetryPolicy(retries=0)) as client, \
            pytest.raises(VocosClientError) as caught:
        list(client.stream_mel_frames(FRAMES for _ in range(1000)))
    _assert_timed_out(caught.value)
    assert time.monotonic() - started < BOUND_S


def test_an_async_send_to_a_server_that_reads_nothing_times_out(deaf_server: str) -> None:
    async def run() -> VocosClientError:
        async with AsyncClient(deaf_server, timeout=TIMEOUT, retry=RetryPolicy(retries=0)) as client, \
                client.stream_mel() as session:
            try:
                for _ in range(1000):
                    await session.send(FRAMES)
            except VocosClientError as exc:
                return exc
        raise AssertionError("every send went through")

    started = time.monotonic()
    error = asyncio.run(run())
    _assert_timed_out(error)
    assert "did not take a message within 1.0 s" in error.message
    assert time.monotonic() - started < BOUND_S
