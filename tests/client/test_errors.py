"""Every failure the server reports is a VocosClientError with its status, type, message and request id:
over HTTP and WebSocket, from Client and AsyncClient, including authentication with ``--api-keys``."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.testing import ServerProcess
from vocos_client import AsyncClient, Client, VocosClientError

KEY = "client-test-key"
MEL = np.random.default_rng(3).standard_normal((100, 20)).astype(np.float32) - 4.0
SERVER_FLAGS = ("--api-keys", KEY)  # every call needs the key


def _error(call: object) -> VocosClientError:
    with pytest.raises(VocosClientError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_http_errors_carry_the_servers_status_type_and_request_id(server: ServerProcess) -> None:
    with Client(server.url, api_key=KEY) as client:
        unknown = _error(lambda: client.decode_mel(MEL, model="no-such-model"))
        channels = _error(lambda: client.decode_mel(MEL[:80]))
        kind = _error(lambda: client.decode_encodec(np.zeros((4, 10), np.int64), model="mel"))
        streamed = _error(lambda: client.decode_mel(MEL[:80], stream=True))
        garbage = _error(lambda: client.resynthesize(b"RIFF not really a wav file"))
    assert (unknown.status, unknown.error) == (404, "model_not_loaded") and "no-such-model" in unknown.message
    assert unknown.request_id and str(unknown).startswith("404 model_not_loaded: ")
    assert channels.status == 422 and "expected 100 mel bands" in channels.message
    assert kind.status == 422 and "needs a model of kind encodec" in kind.message
    assert streamed.status == 422
    assert garbage.status in (400, 415)


def test_without_the_key_http_and_streams_are_401(server: ServerProcess) -> None:
    with Client(server.url) as anonymous, Client(server.url, api_key="wrong") as wrong:
        refused = [_error(anonymous.models), _error(lambda: anonymous.decode_mel(MEL)),
                   _error(lambda: wrong.decode_mel(MEL)), _error(lambda: anonymous.stream_mel()),
                   _error(lambda: list(wrong.stream_mel_frames([MEL])))]
    assert [(e.status, e.error) for e in refused] == [(401, "unauthorized")] * 5
    with Client(server.url, api_key=KEY) as client:
        assert client.decode_mel(MEL).samples.size == 19 * 256
        assert np.concatenate(list(client.stream_mel_frames([MEL]))).size == 19 * 256


def test_async_errors_are_the_same(server: ServerProcess) -> None:
    async def run() -> list[VocosClientError]:
        errors = []
        async with AsyncClient(server.url) as anonymous, AsyncClient(server.url, api_key=KEY) as client:
            for call in (lambda: anonymous.decode_mel(MEL), lambda: client.decode_mel(MEL, model="no-such-model"),
                         lambda: client.decode_mel(MEL[:80])):
                with pytest.raises(VocosClientError) as caught:
                    await call()
                errors.append(caught.value)
            for opened in (anonymous.stream_mel(), client.stream_mel(model="no-such-model")):
                with pytest.raises(VocosClientError) as caught:
                    async with opened:
                        pass
                errors.append(caught.value)
            with pytest.raises(VocosClientError) as caught:
                async with client.stream_mel() as stream:
                    await stream.send(MEL[:80])
                    [chunk async for chunk in stream]
            errors.append(caught.value)
        return errors

    got = [(e.status, e.error) for e in asyncio.run(run())]
    assert got == [(401, "unauthorized"), (404, "model_not_loaded"), (422, "invalid_input"), (401, "unauthorized"),
                   (404, "model_not_loaded"), (422, "invalid_input")]


def test_no_server_is_a_connection_error() -> None:
    from service.testing import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, timeout=5) as client:
        errors = [_error(client.health), _error(lambda: client.stream_mel())]
    assert [(e.status, e.error) for e in errors] == [(0, "connection")] * 2


def test_an_error_survives_pickling_and_copying() -> None:
    """Process pools send a worker's exception back pickled: it could not be rebuilt from its text."""
    import copy
    import pickle

    error = VocosClientError(429, "queue_full", "the queue is full", "r1", retry_after=1.5, dropped=True)
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert isinstance(again, VocosClientError) and str(again) == str(error)
        fields = ("status", "error", "message", "request_id", "retry_after", "not_sent", "dropped")
        assert [getattr(again, f) for f in fields] == [getattr(error, f) for f in fields]
