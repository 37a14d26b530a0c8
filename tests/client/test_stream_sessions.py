"""A stream session's edges: a server that never starts, a refused handshake, iterating or sending after the
end, leaving a frames loop early, DNS failures; and an AsyncClient used from a second event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.sync.server import Server, ServerConnection, serve

from service.testing import ServerProcess
from vocos_client import AsyncClient, Client, RetryPolicy, VocosClientError

MEL = np.random.default_rng(3).standard_normal((100, 60)).astype(np.float32) - 4.0
NO_RETRY = RetryPolicy(retries=0)


def fake(handler: Callable[[ServerConnection], None], refuse: Response | None = None,
         handshake: Callable[[ServerConnection, object], Response | None] | None = None) -> Iterator[str]:
    """A WebSocket server on a free port running ``handler`` per connection (or refusing the handshake, or
    running ``handshake`` on it first)."""
    server: Server = serve(handler, "127.0.0.1", 0,
                           process_request=(lambda c, r: refuse) if refuse else handshake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def silent() -> Iterator[str]:
    yield from fake(lambda connection: time.sleep(3))  # opens, then never says start


@pytest.fixture
def refusing() -> Iterator[str]:
    body = json.dumps({"error": {"type": "unavailable", "message": "too many open connections", "request_id": "r1"}})
    headers = Headers({"content-type": "application/json", "retry-after": "1", "x-request-id": "r1"})
    yield from fake(lambda connection: None, Response(503, "Service Unavailable", headers, body.encode()))


def opening_errors(url: str, timeout: float) -> tuple[VocosClientError, VocosClientError]:
    """The errors of opening a mel stream at ``url`` with Client and with AsyncClient."""
    async def run() -> VocosClientError:
        with pytest.raises(VocosClientError) as caught:
            async with AsyncClient(url, timeout=timeout, retry=NO_RETRY).stream_mel():
                pass
        return caught.value

    with pytest.raises(VocosClientError) as sync:
        Client(url, timeout=timeout, retry=NO_RETRY).stream_mel()
    return sync.value, asyncio.run(run())


def test_a_start_message_that_never_comes_is_a_timeout_error(silent: str) -> None:
    for error in opening_errors(silent, 0.5):
        assert (error.status, error.error) == (0, "timeout") and "no start message within 0.5 s" in error.message


def test_a_refused_handshake_carries_the_servers_error(refusing: str) -> None:
    async def run() -> VocosClientError:
        with pytest.raises(VocosClientError) as caught:
            async with AsyncClient(refusing, retry=NO_RETRY).stream_mel():
                pass
        return caught.value

    with pytest.raises(VocosClientError) as sync:
        Client(refusing, retry=NO_RETRY).stream_mel()
    for error in (sync.value, asyncio.run(run())):
        assert (error.status, error.error, error.message) == (503, "unavailable", "too many open connections")
        assert (error.request_id, error.retry_after) == ("r1", 1.0)


def test_a_host_that_resolves_to_nothing_was_never_sent(tmp_path: object) -> None:
    with pytest.raises(VocosClientError) as caught:
        Client("http://no-such-host.invalid:80", retry=NO_RETRY).stream_mel()
    assert caught.value.error == "connection" and caught.value.not_sent


def test_after_the_end_iterating_again_is_empty_and_sending_says_the_stream_ended(server: ServerProcess) -> None:
    with Client(server.url, timeout=20) as client, client.stream_mel() as stream:
        stream.send(MEL)
        stream.end()
        assert sum(chunk.size for chunk in stream) == stream.samples
        started = time.monotonic()
        assert list(stream) == [] and time.monotonic() - started < 1
        with pytest.raises(VocosClientError, match="the stream has ended"):
            stream.send(MEL)


def test_sending_after_end_raises_at_once_and_the_stream_keeps_its_audio(server: ServerProcess) -> None:
    """Frames sent after end() and before the done message went to a server that reads nothing after the end:
    lost without a word, the stream's audio shorter than the frames sent."""
    async def run() -> tuple[VocosClientError, int, int | None]:
        async with AsyncClient(server.url, timeout=20) as client, client.stream_mel() as stream:
            await stream.send(MEL)
            await stream.end()
            with pytest.raises(VocosClientError) as caught:
                await stream.send(MEL)
            return caught.value, sum([chunk.size async for chunk in stream]), stream.samples

    with Client(server.url, timeout=20) as client, client.stream_mel() as stream:
        stream.send(MEL)
        stream.end()
        with pytest.raises(VocosClientError, match=r"end\(\) was already called") as caught:
            stream.send(MEL)
        assert caught.value.status == 0 and sum(chunk.size for chunk in stream) == stream.samples == 59 * 256
    error, total, samples = asyncio.run(run())
    assert "end() was already called" in error.message and total == samples == 59 * 256


def test_after_an_error_iterating_again_raises_it_again_at_once(server: ServerProcess) -> None:
    async def run() -> tuple[VocosClientError, VocosClientError]:
        async with AsyncClient(server.url, timeout=20) as client, client.stream_mel() as stream:
            await stream.send(MEL[:50])  # 50 mel bands: refused
            errors = []
            for _ in range(2):
                with pytest.raises(VocosClientError) as caught:
                    [chunk async for chunk in stream]
                errors.append(caught.value)
            return errors[0], errors[1]

    with Client(server.url, timeout=20) as client, client.stream_mel() as stream:
        stream.send(MEL[:50])
        with pytest.raises(VocosClientError) as first:
            list(stream)
        started = time.monotonic()
        with pytest.raises(VocosClientError) as again:
            list(stream)
        assert time.monotonic() - started < 1 and again.value is first.value and first.value.status == 422
    first_async, again_async = asyncio.run(run())
    assert again_async is first_async and first_async.status == 422


def test_leaving_a_frames_loop_early_does_not_wait_for_a_stalled_producer(server: ServerProcess) -> None:
    def tts() -> Iterator[np.ndarray]:
        yield MEL
        time.sleep(10)  # the TTS stalls between two parts of the utterance
        yield MEL

    with Client(server.url, timeout=30) as client:
        started = time.monotonic()
        for _chunk in client.stream_mel_frames(tts()):
            break
        assert time.monotonic() - started < 5


def test_an_async_client_used_from_a_second_event_loop_says_so(server: ServerProcess) -> None:
    client = AsyncClient(server.url)
    assert asyncio.run(client.decode_mel(MEL)).samples.size
    with pytest.raises(RuntimeError, match="an AsyncClient serves the event loop it was first used in"):
        asyncio.run(client.decode_mel(MEL))


def _start(connection: ServerConnection, max_message_bytes: int | None = None) -> None:
    connection.send(json.dumps({"type": "start", "model": "mel", "sample_rate": 24000, "format": "f32",
                                "lookahead_frames": 6, "lookahead_ms": 85.3, "hop_length": 256,
                                "max_message_bytes": max_message_bytes}))


@pytest.fixture
def one_big_answer() -> Iterator[str]:
    """Answers the first frame message with one audio message of 65 MiB (a long push at a high rate, f32)."""
    samples = 65 * 2**20 // 4

    def handler(connection: ServerConnection) -> None:
        _start(connection)
        connection.recv()
        connection.send(np.zeros(samples, np.float32).tobytes())
        connection.send(json.dumps({"type": "done", "samples": samples}))
        connection.close()

    yield from fake(handler)


def test_an_audio_message_of_any_size_is_taken(one_big_answer: str) -> None:
    """The client refused audio messages over 64 MiB, which the server sends for one long push at 48 kHz in f32."""
    async def run() -> int:
        async with AsyncClient(one_big_answer, timeout=20, retry=NO_RETRY).stream_mel(format="f32") as stream:
            await stream.send(MEL)
            return sum([chunk.size async for chunk in stream])

    with Client(one_big_answer, timeout=20, retry=NO_RETRY).stream_mel(format="f32") as stream:
        stream.send(MEL)
        assert sum(chunk.size for chunk in stream) == stream.samples == 65 * 2**20 // 4
    assert asyncio.run(run()) == 65 * 2**20 // 4


@pytest.fixture
def late_done() -> Iterator[str]:
    """Answers a frame with 100 samples, then, once both of a test's loops wait, with its done message."""
    def handler(connection: ServerConnection) -> None:
        _start(connection)
        connection.recv()
        connection.send(np.zeros(100, np.float32).tobytes())
        time.sleep(0.5)
        connection.send(json.dumps({"type": "done", "samples": 100}))
        with contextlib.suppress(Exception):
            connection.recv(timeout=10)

    yield from fake(handler)


def test_two_loops_over_one_session_both_end_at_its_done_message(late_done: str) -> None:
    """The done message ended the loop that read it; another loop waiting at the same time (a second thread or
    task) waited for the client's timeout, then raised a timeout error (async), for ever with ``timeout=None``."""
    counts: list[int] = []
    with Client(late_done, timeout=8, retry=NO_RETRY).stream_mel() as stream:
        stream.send(MEL)
        loops = [threading.Thread(target=lambda: counts.append(sum(chunk.size for chunk in stream)))
                 for _ in range(2)]
        started = time.monotonic()
        for loop in loops:
            loop.start()
        for loop in loops:
            loop.join(10)
        assert sorted(counts) == [0, 100] and time.monotonic() - started < 4

    async def run() -> list[int]:
        async with AsyncClient(late_done, timeout=8, retry=NO_RETRY).stream_mel() as stream:
            await stream.send(MEL)

            async def loop() -> int:
                return sum([chunk.size async for chunk in stream])

            return sorted(await asyncio.gather(loop(), loop()))

    started = time.monotonic()
    assert asyncio.run(run()) == [0, 100] and time.monotonic() - started < 4


@pytest.fixture
def tiny_messages() -> Iterator[str]:
    """A server whose largest message is 300 bytes: one 100-band frame (400 bytes and a header) is too big."""
    def handler(connection: ServerConnection) -> None:
        _start(connection, max_message_bytes=300)
        with contextlib.suppress(Exception):
            connection.recv(timeout=10)

    yield from fake(handler)


def test_a_message_the_client_refuses_is_what_a_frames_loop_raises_at_once(tiny_messages: str) -> None:
    """Sync loops raised an unrelated close error; async ones waited for the client's timeout."""
    async def run() -> VocosClientError:
        client = AsyncClient(tiny_messages, timeout=8, retry=NO_RETRY)
        with pytest.raises(VocosClientError) as caught:
            [chunk async for chunk in client.stream_mel_frames([MEL])]
        return caught.value

    started = time.monotonic()
    with pytest.raises(VocosClientError) as sync:
        list(Client(tiny_messages, timeout=8, retry=NO_RETRY).stream_mel_frames([MEL]))
    for error in (sync.value, asyncio.run(run())):
        assert (error.status, error.error) == (413, "payload_too_large"), error
    assert time.monotonic() - started < 5


@pytest.fixture
def slow_handshake() -> Iterator[str]:
    def process_request(connection: ServerConnection, request: object) -> None:
        time.sleep(2)  # a server (or a proxy) that takes its time to answer the upgrade

    yield from fake(lambda connection: None, handshake=process_request)


def test_a_handshake_that_outlasts_the_timeout_is_a_timeout_error(slow_handshake: str) -> None:
    for error in opening_errors(slow_handshake, 0.5):
        assert (error.status, error.error) == (0, "timeout"), error


@pytest.fixture
def never_answers() -> Iterator[str]:
    """Starts a stream, then reads its frames and never sends audio."""
    def handler(connection: ServerConnection) -> None:
        _start(connection)
        with contextlib.suppress(Exception):
            while True:
                connection.recv(timeout=10)

    yield from fake(handler)


def test_a_frames_loop_times_out_while_its_producer_still_goes(never_answers: str) -> None:
    """The async loop waited for its producer to end (here: never) before raising the client's timeout."""
    async def tts() -> AsyncIterator[np.ndarray]:
        while True:
            yield MEL[:, :2]
            await asyncio.sleep(0.05)

    def sync_tts() -> Iterator[np.ndarray]:
        while True:
            yield MEL[:, :2]
            time.sleep(0.01)

    async def run() -> VocosClientError:
        client = AsyncClient(never_answers, timeout=1, retry=NO_RETRY)
        with pytest.raises(VocosClientError) as caught:
            [chunk async for chunk in client.stream_mel_frames(tts())]
        return caught.value

    for attempt in range(3):  # the sync loop raced the producer's own failure on the close
        started = time.monotonic()
        with pytest.raises(VocosClientError) as sync:
            list(Client(never_answers, timeout=1, retry=NO_RETRY).stream_mel_frames(sync_tts()))
        assert (sync.value.error, time.monotonic() - started < 4) == ("timeout", True), (attempt, sync.value)
    started = time.monotonic()
    error = asyncio.run(asyncio.wait_for(run(), 10))
    assert (error.error, time.monotonic() - started < 4) == ("timeout", True), error


@pytest.fixture
def malformed() -> Iterator[str]:
    """A server whose messages break the protocol, as the stream's ``model`` asks: a start message without
    its fields, an audio message of no whole number of f32 samples, or a done message whose count is no number."""
    def handler(connection: ServerConnection) -> None:
        case = connection.request.path.split("model=")[1] if connection.request else ""
        if case == "bare-start":
            connection.send(json.dumps({"type": "start", "model": "mel"}))
        else:
            _start(connection)
            connection.recv(timeout=10)
            connection.send(b"\x00\x01\x02" if case == "odd-audio" else json.dumps({"type": "done", "samples": "x"}))
        with contextlib.suppress(Exception):
            connection.recv(timeout=10)

    yield from fake(handler)


@pytest.mark.parametrize("case", ["bare-start", "odd-audio", "bad-done"])
def test_a_message_that_breaks_the_protocol_is_a_protocol_error_at_once(malformed: str, case: str) -> None:
    """A start message without its fields raised a KeyError; an audio or done message the client could not read
    killed the session's receiver, so the iteration waited for the client's timeout and then called it one (and
    the async session's close raised numpy's ValueError)."""
    async def run() -> VocosClientError:
        with pytest.raises(VocosClientError) as caught:
            async with AsyncClient(malformed, timeout=10, retry=NO_RETRY).stream_mel(model=case) as stream:
                await stream.send(MEL)
                [chunk async for chunk in stream]
        return caught.value

    started = time.monotonic()
    with pytest.raises(VocosClientError) as sync, Client(malformed, timeout=10, retry=NO_RETRY).stream_mel(
            model=case) as stream:
        stream.send(MEL)
        list(stream)
    for error in (sync.value, asyncio.run(run())):
        assert (error.status, error.error) == (0, "protocol") and "expected " in error.message, error
    assert time.monotonic() - started < 5


def test_a_failed_async_producer_is_raised_and_not_logged_as_never_retrieved(never_answers: str) -> None:
    """The producer task's exception was raised by the loop but never retrieved from the task, so asyncio logged
    "Task exception was never retrieved" with it as well."""
    async def tts() -> AsyncIterator[np.ndarray]:
        yield MEL
        raise ValueError("the TTS failed")

    async def run() -> list[str]:
        logged: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: logged.append(context["message"]))
        client = AsyncClient(never_answers, timeout=5, retry=NO_RETRY)
        with pytest.raises(ValueError, match="the TTS failed"):
            [chunk async for chunk in client.stream_mel_frames(tts())]
        gc.collect()  # a task's exception nobody retrieved is logged when the task is collected
        return logged

    assert asyncio.run(run()) == []


def test_cancelling_a_task_while_its_session_closes_cancels_it(never_answers: str) -> None:
    """Closing waited for the receiver inside suppress(CancelledError), which swallowed the caller's cancellation
    too: a task cancelled while it closed a session went on as if it had not been (asyncio.timeout and TaskGroup
    rely on it ending)."""
    async def run() -> bool:
        async with AsyncClient(never_answers, timeout=5, retry=NO_RETRY).stream_mel() as stream:
            receiver = stream._receiver
            stream._receiver = asyncio.create_task(asyncio.sleep(30))  # a receiver still reading as the close comes
            closing = asyncio.create_task(stream.aclose())
            await asyncio.sleep(0.3)
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closing
            stream._receiver.cancel()
            stream._receiver = receiver
            return closing.cancelled()

    assert asyncio.run(asyncio.wait_for(run(), 10))
