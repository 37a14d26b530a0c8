"""The clients try a call again when the server refused it for now (429, 502, 503) or no connection could be
made, after the server's Retry-After when it names one; never an answer about the input, a deadline, a
failed batch, a read timeout, or a wait beyond the policy's; streams are retried while opening only."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from service.testing import ServerProcess
from vocos_client import AsyncClient, Client, RetryPolicy, VocosClientError
from vocos_client import retry as retry_module
from vocos_client.wire import float_wav

MEL = np.random.default_rng(5).standard_normal((100, 12)).astype(np.float32) - 4.0
SAMPLES = np.linspace(-0.5, 0.5, 2816, dtype=np.float32)

Answer = httpx.Response | Exception
SERVER_FLAGS = ("--max-streams", "1")  # one stream per model at once


def _refusal(status: int, retry_after: str | None = None, error: str = "queue_full") -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers, json={"error": {"type": error, "message": "not now",
                                                                   "request_id": "r1"}})


def _audio() -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "audio/wav", "x-model": "mel"},
                          content=float_wav(SAMPLES, 24000))


class Script:
    """A transport that gives the scripted answers in order and counts the requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sync client's waits between tries, recorded instead of slept."""
    taken: list[float] = []
    monkeypatch.setattr(retry_module.time, "sleep", taken.append)
    return taken


def _client(script: Script, retry: RetryPolicy | None = None) -> Client:
    return Client("http://vocos.test", retry=retry, transport=httpx.MockTransport(script))


def _error(call: Callable[[], object]) -> VocosClientError:
    with pytest.raises(VocosClientError) as caught:
        call()
    return caught.value


def test_a_call_refused_for_now_is_tried_again_after_the_servers_retry_after(waits: list[float]) -> None:
    script = Script(_refusal(503, "2", "device_out_of_memory"), _refusal(429, "1"), _audio())
    with _client(script) as client:
        audio = client.decode_mel(MEL)
    np.testing.assert_array_equal(audio.samples, SAMPLES)
    assert script.requests == 3
    assert 2.0 <= waits[0] <= 2.2 and 1.0 <= waits[1] <= 1.1  # as asked, up to 10 % later (spread)


def test_the_last_refusal_is_raised_once_the_retries_are_spent(waits: list[float]) -> None:
    script = Script(*[_refusal(429, "1")] * 4)
    with _client(script, RetryPolicy(retries=3)) as client:
        error = _error(lambda: client.decode_mel(MEL))
    assert (error.status, error.error, error.retry_after, script.requests, len(waits)) == (429, "queue_full", 1.0, 4, 3)


def test_no_retries_and_waits_beyond_the_policys_end_at_the_first_refusal(waits: list[float]) -> None:
    never, long_wait = Script(_refusal(503, "1")), Script(_refusal(429, "60"))
    with _client(never, RetryPolicy(retries=0)) as client:
        assert _error(lambda: client.decode_mel(MEL)).status == 503
    with _client(long_wait, RetryPolicy(max_wait_s=20)) as client:
        assert _error(lambda: client.decode_mel(MEL)).retry_after == 60.0
    assert (never.requests, long_wait.requests, waits) == (1, 1, [])


@pytest.mark.parametrize(("status", "error"), [(422, "invalid_input"), (504, "deadline_exceeded"),
                                               (500, "internal"), (401, "unauthorized")])
def test_answers_about_the_call_itself_are_not_retried(waits: list[float], status: int, error: str) -> None:
    script = Script(_refusal(status, error=error), _audio())
    with _client(script) as client:
        assert _error(lambda: client.decode_mel(MEL)).status == status
    assert script.requests == 1 and waits == []


def test_without_retry_after_the_wait_doubles_with_jitter(waits: list[float]) -> None:
    script = Script(_refusal(502), _refusal(503), _refusal(503), _audio())
    with _client(script, RetryPolicy(retries=3, backoff_s=1.0, max_wait_s=3.0)) as client:
        client.decode_mel(MEL)
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 1.5 <= waits[2] <= 3.0  # 1, 2, 4 -> capped at 3


def test_a_connection_never_made_is_retried_a_read_that_timed_out_is_not(waits: list[float]) -> None:
    refused = Script(httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), _audio())
    with _client(refused) as client:
        assert client.decode_mel(MEL).samples.size == SAMPLES.size
    timed_out = Script(httpx.ReadTimeout("computing"), _audio())
    with _client(timed_out) as client:
        error = _error(lambda: client.decode_mel(MEL))
    assert (refused.requests, timed_out.requests) == (3, 1)
    assert error.error == "timeout" and not error.not_sent  # the read timed out: status 0, "timeout"


def _serve_then_drop_first(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A loopback HTTP server whose first connection is closed once its request is read, without a word (a
    kept-alive connection closed for idleness as the call went out); the second gets ``answer``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for n in range(2):
            connection, _ = listener.accept()
            with connection:
                received = b""
                while b"\r\n\r\n" not in received:
                    received += (chunk := connection.recv(65536))
                    if not chunk:  # the client hung up (a failing test): nothing to answer
                        return
                head, _, body = received.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length and (chunk := connection.recv(65536)):
                    body += chunk
                if n == 1:
                    connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_connection_closed_without_an_answer_is_tried_again(waits: list[float]) -> None:
    wav = float_wav(SAMPLES, 24000)
    head = f"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\nx-model: mel\r\ncontent-length: {len(wav)}\r\n\r\n"
    listener, thread = _serve_then_drop_first(head.encode() + wav)
    with listener, Client(f"http://127.0.0.1:{listener.getsockname()[1]}") as client:
        np.testing.assert_array_equal(client.decode_mel(MEL).samples, SAMPLES)
    thread.join(10)
    assert len(waits) == 1
    once = Script(httpx.RemoteProtocolError("Server disconnected without sending a response."), _audio())
    malformed = Script(httpx.RemoteProtocolError("illegal status line: bytearray(b'SSH-2.0')"), _audio())
    with _client(once) as client:
        assert client.decode_mel(MEL).samples.size == SAMPLES.size
    with _client(malformed) as client:
        refused = _error(lambda: client.decode_mel(MEL))
    assert (once.requests, malformed.requests, refused.dropped) == (2, 1, False)  # a wrong answer is no drop


def test_streamed_answers_and_models_are_retried_probes_are_not(waits: list[float]) -> None:
    script = Script(_refusal(503, "1"), _audio(), _refusal(503, "1"),
                    httpx.Response(200, json={"models": [{"name": "mel"}]}), _refusal(503, "1"))
    with _client(script) as client:
        chunks = client.decode_mel(MEL, stream=True)
        np.testing.assert_array_equal(np.concatenate(list(chunks)), SAMPLES)
        assert client.models() == [{"name": "mel"}]
        assert _error(client.ready).status == 503
    assert script.requests == 5


def test_the_async_client_retries_the_same_way() -> None:
    script = Script(httpx.ConnectError("refused"), _refusal(429, "0"), _audio(), _refusal(422, error="invalid_input"))

    async def run() -> tuple[np.ndarray, VocosClientError]:
        async with AsyncClient("http://vocos.test", transport=httpx.MockTransport(script)) as client:
            audio = await client.decode_mel(MEL)
            with pytest.raises(VocosClientError) as caught:
                await client.decode_mel(MEL)
            return audio.samples, caught.value

    samples, error = asyncio.run(run())
    np.testing.assert_array_equal(samples, SAMPLES)
    assert error.status == 422 and script.requests == 4


def test_a_policy_with_negative_numbers_is_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        RetryPolicy(retries=-1)


def test_opening_a_stream_is_retried_until_the_stream_limit_frees_a_place(server: ServerProcess) -> None:
    with Client(server.url) as client, Client(server.url, retry=RetryPolicy(retries=0)) as impatient:
        first = client.stream_mel()
        refused = _error(impatient.stream_mel)
        threading.Timer(0.3, first.close).start()  # the place frees during the retry's wait
        with client.stream_mel() as second:
            second.send(MEL)
            second.end()
            audio = np.concatenate(list(second))
    assert (refused.status, refused.error) == (503, "too_many_streams")
    assert refused.retry_after is not None and refused.retry_after >= 1
    assert audio.size == (MEL.shape[1] - 1) * 256


def test_the_async_stream_open_is_retried_too(server: ServerProcess) -> None:
    async def run() -> int:
        async with AsyncClient(server.url) as client, client.stream_mel() as first:
            async def close_soon() -> None:
                await asyncio.sleep(0.3)
                await first.aclose()

            closing = asyncio.create_task(close_soon())
            chunks = [chunk async for chunk in client.stream_mel_frames([MEL])]
            await closing
            return int(sum(chunk.size for chunk in chunks))

    assert asyncio.run(run()) == (MEL.shape[1] - 1) * 256
