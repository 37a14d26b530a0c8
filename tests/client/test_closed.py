"""What a client or a stream says when it is used after its close: the caller's mistake, named as such."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.testing import ServerProcess, free_port
from vocos_client import AsyncClient, Client, VocosClientError

MEL = np.random.default_rng(5).standard_normal((100, 30)).astype(np.float32) - 4.0
CLOSED = r"this (Async)?Client is closed \(close\(\) was called, or its with block ended\): make a new"
CLOSED_STREAM = r"closed by its own side \(close\(\), or its with block ended\) before the server's done message"


def test_a_closed_client_refuses_every_call() -> None:
    """A stream opened with a closed client as with an open one (its close did not end its use; here, with no
    server, a connection error instead), and calls raised httpx's "Cannot send a request" without the fix."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: only the closed state can explain the error
    with Client(url) as client:
        pass
    for use in (lambda: client.decode_mel(MEL), client.models, client.health, client.stream_mel,
                client.stream_encodec, lambda: next(client.stream_mel_frames([MEL]))):
        with pytest.raises(RuntimeError, match=CLOSED):
            use()


def test_a_closed_async_client_refuses_every_call() -> None:
    async def run() -> None:
        async with AsyncClient(f"http://127.0.0.1:{free_port()}") as client:
            pass
        with pytest.raises(RuntimeError, match=CLOSED):
            await client.decode_mel(MEL)
        with pytest.raises(RuntimeError, match=CLOSED):
            await client.ready()
        with pytest.raises(RuntimeError, match=CLOSED):
            async with client.stream_mel():
                pass
        with pytest.raises(RuntimeError, match=CLOSED):
            async with client.stream_encodec():
                pass

    asyncio.run(run())


def test_a_stream_closed_by_its_caller_says_so(server: ServerProcess) -> None:
    """Sending to or iterating a session after its own close() blamed the server: "the stream closed before it
    was done (code 1000, '')"."""
    with Client(server.url) as client:
        session = client.stream_mel()
        session.send(MEL)
        session.close()
        for use in (lambda: session.send(MEL), session.end, lambda: list(session)):
            with pytest.raises(VocosClientError, match=CLOSED_STREAM):
                use()


def test_an_async_stream_closed_by_its_caller_says_so(server: ServerProcess) -> None:
    async def run() -> None:
        async with AsyncClient(server.url) as client, client.stream_mel() as session:
            await session.send(MEL)
            await session.aclose()
            with pytest.raises(VocosClientError, match=CLOSED_STREAM):
                await session.send(MEL)
            with pytest.raises(VocosClientError, match=CLOSED_STREAM):
                [chunk async for chunk in session]

    asyncio.run(run())


def test_a_stream_the_server_closed_first_is_not_blamed_on_its_callers_close() -> None:
    """The caller's close came while the server's close frame (its error, 4503 here) had not yet reached the
    receiver: the session said the stream was closed by its own side, hiding the server's error."""
    from types import SimpleNamespace

    from websockets.exceptions import ConnectionClosed
    from websockets.frames import Close

    from vocos_client.async_stream import AsyncStreamSession
    from vocos_client.session import StreamInfo

    class ServerClosedFirst:
        """A connection whose server sent close 4503 before the caller's own close."""

        def __init__(self) -> None:
            self.protocol = SimpleNamespace(close_rcvd_then_sent=True, close_code=4503, close_reason="unavailable")
            self.closing = asyncio.Event()

        def __aiter__(self) -> ServerClosedFirst:
            return self

        async def __anext__(self) -> bytes:
            await self.closing.wait()  # the receiver runs only after the caller's close
            raise ConnectionClosed(Close(4503, "unavailable"), Close(4503, "unavailable"), True)

        async def close(self) -> None:
            self.closing.set()

    async def run() -> None:
        info = StreamInfo(model="mel", sample_rate=24000, format="f32", lookahead_frames=0, lookahead_ms=0.0,
                          hop_length=256)
        session = AsyncStreamSession(ServerClosedFirst(), info, 5.0)  # type: ignore[arg-type]
        await session.aclose()
        with pytest.raises(VocosClientError) as raised:
            [chunk async for chunk in session]
        assert raised.value.status == 503 and "code 4503" in str(raised.value), raised.value

    asyncio.run(run())
