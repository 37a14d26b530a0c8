"""A stream's incoming side: the client's WebSocket messages, read ahead of the model while it computes,
held in the server's byte budget while they wait, and parsed into frames or the end."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np
import orjson
from fastapi import WebSocket

from service.echo import clip
from service.errors import BodyTimeoutError, MalformedPayloadError
from service.http.payloads import NPY_MAGIC, parse_npy
from service.runtime.inflight import InflightBytes
from service.runtime.streaming import AudioStream

# Bytes of a stream's messages read ahead of the model (one more message may go past it): chunks of
# frames are tens of kB, so this holds seconds of them without letting a fast client fill memory. They
# count against VOCOS_MAX_INFLIGHT_BYTES while they wait, as request bodies do.
READ_AHEAD_BYTES = 2**20
# The only text message a client sends is {"type": "end"}: a longer one is refused without parsing it.
MAX_TEXT_MESSAGE = 256


class Inbox:
    """The client's messages, read as they come while the stream computes: ``(arrival, message)`` pairs,
    or the read's exception (idle timeout, or the stream's open time run out) in a message's place. After
    a text message (the end, or a malformed one) it only watches for the client's disconnect; it pauses
    while ``max_bytes`` of messages wait, so a client that sends faster than the model decodes is held
    back by TCP, not buffered here."""

    def __init__(self, websocket: WebSocket, idle_s: float, stream: AudioStream, budget: InflightBytes,
                 max_bytes: int = READ_AHEAD_BYTES) -> None:
        self._queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        self._bytes = 0
        self._budget = budget  # the server's: waiting messages count against new requests, as bodies do
        self._max_bytes = max_bytes
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self.gone = asyncio.Event()  # set once the client's disconnect is read
        self.close_code: int | None = None  # the disconnect's
        self._reader = asyncio.create_task(self._read(websocket, idle_s, stream))

    async def _read(self, websocket: WebSocket, idle_s: float, stream: AudioStream) -> None:
        while True:
            await self._room.wait()
            try:
                message: Any = await _receive(websocket, idle_s, stream)
                if self._closed:  # Python 3.11's wait_for drops a cancellation that meets a message
                    return
            except Exception as exc:  # handed to the conversation, which raises it in its turn
                self._queue.put_nowait((time.monotonic(), exc))
                return
            self._bytes += _size(message)
            self._budget.force_take(_size(message))  # it exists already
            if self._bytes >= self._max_bytes:
                self._room.clear()
            self._queue.put_nowait((time.monotonic(), message))
            if message.get("type") == "websocket.disconnect":
                self._left(message)
                return
            if message.get("bytes") is None:  # the end (or a malformed text message): no more chunks
                await self._watch(websocket)
                return

    async def _watch(self, websocket: WebSocket) -> None:
        """Wait for the client's disconnect, which stops the last chunks' steps; messages after the end
        are not the stream's and are dropped."""
        try:
            while (message := await websocket.receive()).get("type") != "websocket.disconnect":
                pass
        except Exception:  # the server closed the connection first: nothing left to watch
            return
        self._left(message)  # a close for a malformed message is the client's error still

    def _left(self, disconnect: Any) -> None:
        """The client's disconnect message is read: its close code, then ``gone``."""
        self.close_code = disconnect.get("code")
        self.gone.set()

    async def take(self) -> list[tuple[float, Any]]:
        """The next message (waited for), and every message already waiting behind it."""
        messages = [await self._queue.get()]
        while not self._queue.empty():
            messages.append(self._queue.get_nowait())
        taken = sum(_size(m) for _, m in messages)
        self._bytes -= taken
        self._budget.release(taken)
        self._room.set()
        return messages

    @property
    def waiting_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        self._closed = True
        self._reader.cancel()
        self._budget.release(self._bytes)
        self._bytes = 0


def _size(message: Any) -> int:
    return len(message.get("bytes") or b"") if isinstance(message, dict) else 0


async def _receive(websocket: WebSocket, idle_s: float, stream: AudioStream) -> dict[str, Any]:
    """The client's next message, waited for no longer than ``idle_s`` or the stream's open time left."""
    open_s = stream.open_until - time.monotonic()
    try:
        message = dict(await asyncio.wait_for(websocket.receive(), max(0.0, min(idle_s, open_s))))
    except TimeoutError:
        if open_s < idle_s:
            raise stream.open_too_long() from None
        raise BodyTimeoutError(
            f"no message for {idle_s:g} s (VOCOS_STREAM_IDLE_TIMEOUT_S); send frames or {{\"type\": \"end\"}}"
        ) from None
    return message


def frames_of(data: bytes) -> np.ndarray:
    """The array of a binary message; one that is no .npy file told apart from parse_npy's words for a body:
    the end message sent as bytes (a Node Buffer, a browser Blob), or raw samples without a header."""
    if data.startswith(NPY_MAGIC):
        return parse_npy(data)
    with contextlib.suppress(orjson.JSONDecodeError):
        if len(data) <= MAX_TEXT_MESSAGE and orjson.loads(data) == {"type": "end"}:
            raise MalformedPayloadError('got {"type": "end"} as a binary message; send it as a text message '
                                        "(binary messages carry .npy frames)")
    raise MalformedPayloadError(
        f"expected each binary message to be one .npy array (np.save's format, starting with the \\x93NUMPY "
        f"magic); got {len(data)} bytes beginning {data[:8].hex(' ')}")


def check_end_message(text: str) -> None:
    if len(text) > MAX_TEXT_MESSAGE:  # refused unparsed: a text message up to MAX_BODY_BYTES held the event loop
        raise MalformedPayloadError(
            f'expected binary .npy frames or the text message {{"type": "end"}}, got a text message of {len(text)} '
            "characters"
        )
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if parsed != {"type": "end"}:  # a key beside "type" is an option this protocol does not have: never ignored
        raise MalformedPayloadError(
            f'expected binary .npy frames or the text message {{"type": "end"}}, got {clip(text, 60)}'
        )
