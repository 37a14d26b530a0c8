"""Slow uploads against real uvicorn on loopback: a body that dribbles in, or never comes, is answered
408 and its connection closed once VOCOS_BODY_TIMEOUT_S has passed, while other clients are served
as usual and a fast upload of the same size is unaffected."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
import pytest
from reliability_helpers import RawConnection, http_request

from service.testing import npy_bytes

pytestmark = pytest.mark.asyncio

BODY_TIMEOUT_S = 1.0
MEL = np.zeros((100, 2000), np.float32)  # 800 kB as .npy
HEADERS = [("Content-Type", "application/x-npy")]


async def dribble(connection: RawConnection, body: bytes, chunk: int, pause: float) -> None:
    """Send ``body`` ``chunk`` bytes at a time, pausing between chunks, until done or cut off."""
    with contextlib.suppress(ConnectionError):
        for start in range(0, len(body), chunk):
            await connection.send(body[start : start + chunk])
            await asyncio.sleep(pause)


@pytest.mark.parametrize("bytes_per_step", [0, 100])
async def test_a_slow_or_stalled_body_is_answered_408_within_the_timeout(make_live, bytes_per_step: int) -> None:
    body = npy_bytes(MEL)
    async with make_live(body_timeout_s=BODY_TIMEOUT_S) as server:
        slow = await RawConnection.open(server.port)
        request = http_request("POST", "/decode/mel", body, HEADERS)
        head_size = len(request) - len(body)
        started = time.monotonic()
        await slow.send(request[:head_size])  # complete headers, declaring 800 kB
        sender = asyncio.ensure_future(dribble(slow, body, bytes_per_step, 0.1)) if bytes_per_step else None

        # Meanwhile another client is served as usual.
        other = await server.client.post("/decode/mel", content=npy_bytes(MEL[:, :50]), headers=dict(HEADERS))
        assert other.status_code == 200

        status, answer = await slow.read_response(timeout=BODY_TIMEOUT_S + 5)
        elapsed = time.monotonic() - started
        if sender is not None:
            sender.cancel()
        slow.close()
    print(f"{bytes_per_step} bytes per 0.1 s: {status} after {elapsed:.2f} s, connection closed")
    assert status == 408, answer[:300]
    assert b"VOCOS_BODY_TIMEOUT_S" in answer
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 3  # read_response returned: the server closed it
    assert server.state.slots["mel"].engine.queue_depth == 0  # it never reached the queue
    assert server.request_count("/decode/mel", 408) == 1


async def test_a_fast_upload_of_the_same_body_is_unaffected(make_live) -> None:
    async with make_live(body_timeout_s=BODY_TIMEOUT_S) as server:
        fast = await RawConnection.open(server.port)
        await fast.send(http_request("POST", "/decode/mel?format=wav32f", npy_bytes(MEL), HEADERS))
        assert await fast.read_status(timeout=30) == 200
        fast.close()


async def test_a_request_that_lies_about_its_length_times_out_too(make_live) -> None:
    """Content-Length larger than what is sent: the server waits for the rest only until the timeout."""
    body = npy_bytes(MEL[:, :20])
    async with make_live(body_timeout_s=BODY_TIMEOUT_S) as server:
        liar = await RawConnection.open(server.port)
        request = http_request("POST", "/decode/mel", body, [*HEADERS, ("Content-Length", str(len(body) + 10))],
                               length=False)
        await liar.send(request)
        status, _ = await liar.read_response(timeout=BODY_TIMEOUT_S + 5)
        liar.close()
    assert status == 408
