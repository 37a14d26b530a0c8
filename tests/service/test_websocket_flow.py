"""How a stream's messages flow: chunks read ahead into one step, the read-ahead's byte budget, clients that
leave while their chunks compute or stop reading, pings, and no compression."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import types
from typing import Any

import numpy as np
import pytest
import torch
import websockets
from service_helpers import live_server, settings_with, wait_until
from stream_helpers import collect

from service.http.state import state_of
from service.runtime.models import ServedModel
from service.settings import Settings
from service.testing import npy_bytes as npy


def test_chunks_that_arrive_during_a_step_go_into_the_next_step_together(
        client_for: Any, models: dict[str, ServedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    served = models["mel"]
    real = served.decode_steps
    calls: list[list[tuple[int, bool]]] = []
    release = threading.Event()

    def held(states: Any, chunks: Any, final: Any, guess: Any = None) -> Any:
        calls.append([(int(c.shape[-1]), bool(f)) for c, f in zip(chunks, final, strict=True)])
        if len(calls) == 1:
            release.wait(10)  # the first step computes until every other chunk is in
        return real(states, chunks, final, guess)

    client = client_for()
    while client.get("/readyz").status_code != 200:  # the warm-up's own stream steps come first
        time.sleep(0.01)
    monkeypatch.setitem(vars(served), "decode_steps", held)  # setitem: undone by deleting it again
    grid = np.random.default_rng(3).standard_normal((served.n_features, 30)).astype(np.float32)
    with client.websocket_connect("/stream/mel?format=f32") as ws:
        ws.receive_text()
        for t in range(0, 30, 5):
            ws.send_bytes(npy(grid[:, t:t + 5]))
        ws.send_text(json.dumps({"type": "end"}))
        time.sleep(0.5)  # the server reads them while the first step is held
        release.set()
        audio, done = collect(ws, "<f4")
    # Six chunk messages and the end in two steps: the first chunk, then the other five with the end.
    assert calls == [[(5, False)], [(25, True)]]
    expected = served.decode_batch([torch.from_numpy(grid)])[0].numpy()
    assert done["samples"] == audio.size == expected.size
    assert float(np.abs(audio - expected).max()) <= 1e-5 * float(np.abs(expected).max())


@pytest.mark.asyncio
async def test_the_server_never_negotiates_permessage_deflate(base_settings: Settings,
                                                              models: dict[str, ServedModel]) -> None:
    # websockets offers permessage-deflate by default; float frames and audio would not compress.
    async with live_server(base_settings, models) as server, \
            websockets.connect(f"ws://127.0.0.1:{server.port}/stream/mel") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert json.loads(await ws.recv())["type"] == "start"


@pytest.mark.parametrize(("bad", "status"), [
    ("hello", 400), (b"not npy", 400),
    (npy(np.zeros((7, 5), np.float32)), 422), (npy(np.full((100, 5), np.nan, np.float32)), 422),  # valid .npy
], ids=["text", "not-npy", "wrong-bands", "nan"])
def test_chunks_read_before_a_bad_message_are_answered_first(client_for: Any, models: dict[str, ServedModel],
                                                            bad: str | bytes, status: int) -> None:
    served = models["mel"]
    grid = np.random.default_rng(4).standard_normal((served.n_features, 40)).astype(np.float32)
    with client_for().websocket_connect("/stream/mel?format=f32") as ws:
        ws.receive_text()
        ws.send_bytes(npy(grid[:, :20]))
        ws.send_bytes(npy(grid[:, 20:]))
        ws.send_text(bad) if isinstance(bad, str) else ws.send_bytes(bad)
        audio, error = collect(ws, "<f4")
    assert error["type"] == "error" and error["status"] == status
    # The final samples of 40 frames, whichever steps they took: nothing of the two chunks is lost.
    expected = served.decode_batch([torch.from_numpy(grid)])[0].numpy()[:audio.size]
    assert audio.size == max(0, 40 * served.model.hop_length - served.lookahead.samples)
    assert float(np.abs(audio - expected).max()) <= 1e-5 * float(np.abs(expected).max())


@pytest.mark.asyncio
async def test_read_ahead_pauses_once_its_byte_budget_waits() -> None:
    from service.http.stream_inbox import Inbox

    class Flooding:  # a client that sends 1 MB messages as fast as it is read
        def __init__(self) -> None:
            self.read = 0

        async def receive(self) -> dict[str, Any]:
            self.read += 1
            return {"type": "websocket.receive", "bytes": b"\0" * 2**20}

    from service.runtime.inflight import InflightBytes

    client = Flooding()
    never_too_long = types.SimpleNamespace(open_until=float("inf"))
    server_budget = InflightBytes(2**30)
    inbox = Inbox(client, idle_s=5, stream=never_too_long, budget=server_budget,  # type: ignore[arg-type]
                   max_bytes=3 * 2**20)
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert client.read == 3 and inbox.waiting_bytes == 3 * 2**20  # paused at the read-ahead's bytes
        assert server_budget.held == 3 * 2**20  # waiting, they count against new requests as bodies do
        assert len(await inbox.take()) == 3 and inbox.waiting_bytes == 0 == server_budget.held
        for _ in range(20):
            await asyncio.sleep(0)
        assert client.read == 6 and server_budget.held == 3 * 2**20
    finally:
        inbox.close()
    assert server_budget.held == 0  # what still waited is released with the stream


@pytest.mark.asyncio
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_a_message_that_meets_the_inbox_close_is_not_counted_after_it(turns: int) -> None:
    """Before Python 3.12 wait_for drops a cancellation that lands as its receive is done: the reader went
    on, and counted bytes in the server's budget after close had released the stream's, for good."""
    from service.http.stream_inbox import Inbox
    from service.runtime.inflight import InflightBytes

    class OneMessage:
        def __init__(self) -> None:
            self.pending: asyncio.Future[dict[str, Any]] | None = None

        async def receive(self) -> dict[str, Any]:
            self.pending = asyncio.get_running_loop().create_future()
            return await self.pending

    client, budget = OneMessage(), InflightBytes(2**30)
    inbox = Inbox(client, idle_s=30, stream=types.SimpleNamespace(open_until=float("inf")),  # type: ignore[arg-type]
                   budget=budget)
    for _ in range(5):
        await asyncio.sleep(0)
    assert client.pending is not None
    client.pending.set_result({"type": "websocket.receive", "bytes": b"\0" * 2**20})  # a chunk arrives...
    for _ in range(turns):
        await asyncio.sleep(0)
    inbox.close()  # ...as the conversation ends
    for _ in range(10):
        await asyncio.sleep(0)
    assert budget.held == 0


class SlowSteps(ServedModel):
    """A served model whose stream steps take 50 ms each and are counted."""

    def __init__(self, base: ServedModel) -> None:
        self.__dict__.update(base.__dict__)
        self.steps = 0

    def decode_steps(self, states: Any, chunks: Any, final: Any, guess: Any = None) -> list[torch.Tensor]:
        self.steps += 1
        time.sleep(0.05)
        return super().decode_steps(states, chunks, final, guess)


@pytest.mark.asyncio
@pytest.mark.parametrize("ended", [False, True])
async def test_a_client_that_leaves_while_its_chunk_computes_stops_it(base_settings: Settings,
                                                                      models: dict[str, ServedModel],
                                                                      ended: bool) -> None:
    """Also after its end message: the server still watches for the client's disconnect while the last
    chunks compute."""
    slow = SlowSteps(models["mel"])
    frames = 8 * 256  # five messages of 8 engine steps each (2 s in all), within the 1 MiB a message may be
    async with live_server(base_settings, {**models, "mel": slow}) as server:
        engine = state_of(server.app).slots["mel"].engine
        slow.steps = 0  # not the warm-up's
        ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/stream/mel", max_size=None)
        await ws.recv()
        for _ in range(5):
            await ws.send(npy(np.zeros((slow.n_features, frames), np.float32)))
        if ended:
            await ws.send(json.dumps({"type": "end"}))
        while slow.steps == 0:
            await asyncio.sleep(0.01)
        ws.transport.abort()  # the client is gone, without a goodbye
        left = time.monotonic()
        while engine.open_streams and time.monotonic() - left < 5:
            await asyncio.sleep(0.01)
        freed_s = time.monotonic() - left
        await asyncio.sleep(0.3)
        steps = slow.steps
    assert engine.open_streams == 0 and freed_s < 1.0, freed_s  # against about 2 s had the steps gone on
    assert steps < 10  # the rest of the 40 steps were not run


@pytest.mark.asyncio
@pytest.mark.parametrize(("messages", "frames"), [(12, 2500), (40, 2000)])
async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(base_settings: Settings,
                                                                            models: dict[str, ServedModel],
                                                                            messages: int, frames: int) -> None:
    """Without a bound, the audio of a client that reads nothing would pile up in the server's memory
    (answers that uvicorn's send takes at once below its buffer's high-water mark), or the server's next
    send would wait for ever (many 1 MB answers: above it, uvicorn's send waits), its stream held open."""
    settings = settings_with(base_settings, send_timeout_s=1.0)
    async with live_server(settings, models) as server:
        engine = state_of(server.app).slots["mel"].engine
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # a client that never reads
        writer.write(b"GET /stream/mel HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        payload = npy(np.zeros((models["mel"].n_features, frames), np.float32))  # within the 1 MiB of a message
        mask = b"\0\0\0\0"  # a client's frames are masked; a zero key leaves the payload as it is
        for _ in range(messages):  # written into asyncio's buffer, not waited for: the server stops reading
            writer.write(bytes([0x82, 0x80 | 127]) + len(payload).to_bytes(8, "big") + mask + payload)
        started = time.monotonic()
        while engine.open_streams == 0 and time.monotonic() - started < 10:  # until the stream is open
            await asyncio.sleep(0.01)
        while engine.open_streams and time.monotonic() - started < 30:
            await asyncio.sleep(0.05)
        freed_s = time.monotonic() - started
        metrics = (await server.client.get("/metrics")).text
        writer.close()
    assert engine.open_streams == 0 and freed_s < 15, freed_s
    assert 'vocos_streams_total{model="mel",outcome="disconnected",transport="websocket"} 1.0' in metrics


def test_pings_go_unanswered_while_the_client_leaves_what_was_sent_unread() -> None:
    """RFC 6455 lets a server answer only the latest unanswered ping: a client that pings and reads nothing
    grew the server's memory by a pong per ping."""
    from wsproto.events import Ping

    from service.http.server import PONG_BACKLOG_BYTES, AbortableWSProtocol

    class Transport:
        def __init__(self, unsent: int) -> None:
            self.unsent, self.written = unsent, b""

        def get_write_buffer_size(self) -> int:
            return self.unsent

        def write(self, data: bytes) -> None:
            self.written += data

    protocol = AbortableWSProtocol.__new__(AbortableWSProtocol)  # only what handle_ping uses
    protocol.conn = types.SimpleNamespace(send=lambda event: b"pong:" + bytes(event.payload))  # type: ignore
    for unsent, answered in ((0, True), (PONG_BACKLOG_BYTES + 1, False)):
        protocol.transport = Transport(unsent)  # type: ignore[assignment]
        protocol.handle_ping(Ping(payload=b"hi"))
        assert (protocol.transport.written == b"pong:hi") is answered  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.parametrize(("frame", "code"), [
    (bytes([0x81, 0x82, 0, 0, 0, 0]) + b"\xff\xfe", 1007),  # a text message that is no UTF-8
    (bytes([0x80, 0x83, 0, 0, 0, 0]) + b"end", 1002),  # a continuation frame with no message begun
], ids=["not-utf8", "broken-framing"])
async def test_frames_the_server_cannot_parse_get_a_close_frame_that_says_why(
        base_settings: Settings, models: dict[str, ServedModel], frame: bytes, code: int,
        caplog: pytest.LogCaptureFixture) -> None:
    """RFC 6455 7.1.7: a connection failed for its client's frames gets a close frame with the reason; it was
    dropped without one, which a client reports as 1006, no reason given. The stream ends as a 400."""
    caplog.set_level(logging.INFO, "service.access")
    async with live_server(base_settings, models) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /stream/mel HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(frame)  # masked with a zero key (a client's frames are masked)
        received = await asyncio.wait_for(reader.read(), 10)  # to the connection's end
        writer.close()
        # counted as the client's malformed input, not as a client that left (499)
        registry = state_of(server.app).metrics.registry
        streams = {outcome: {"model": "mel", "transport": "websocket", "outcome": outcome}
                   for outcome in ("error", "disconnected")}
        await wait_until(lambda: registry.get_sample_value("vocos_streams_total", streams["error"]) == 1)
        assert registry.get_sample_value("vocos_streams_total", streams["disconnected"]) == 0
    frames = []  # (opcode, payload) of the server's frames, which are unmasked
    while received:
        size, at = received[1], 2
        if size == 126:
            size, at = int.from_bytes(received[2:4], "big"), 4
        frames.append((received[0] & 0x0F, received[at:at + size]))
        received = received[at + size:]
    assert [op for op, _ in frames] == [0x1, 0x8]  # the start message, then the close
    assert int.from_bytes(frames[1][1][:2], "big") == code and frames[1][1][2:]  # with the reason
    assert [r.fields["status"] for r in caplog.records if r.name == "service.access"] == [400]  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/stream/nope", "/api/stream/mel", "/"])
async def test_a_handshake_to_a_path_that_is_no_stream_is_404_naming_the_streams(
        base_settings: Settings, models: dict[str, ServedModel], path: str) -> None:
    """A client whose base URL has a wrong path got a bare 403 (the client seemed refused, not misdirected),
    where the same mistake over HTTP gets a 404 naming the API's paths."""
    async with live_server(base_settings, models) as server:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{server.port}{path}")
    answer = refused.value.response
    assert answer.status_code == 404, answer
    error = json.loads(answer.body)["error"]
    assert error["type"] == "http_error" and error["request_id"] == answer.headers["X-Request-Id"]
    assert error["message"] == f"no stream at {path!r}; the streams are /stream/mel and /stream/encodec (ws:// or " \
        "wss://, on the API's host)"

