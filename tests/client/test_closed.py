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
