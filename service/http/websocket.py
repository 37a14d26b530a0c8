"""The WebSocket transport of streams: ``/stream/mel`` and ``/stream/encodec``.

Protocol (docs/streaming.md): after the handshake the server sends one text message
``{"type": "start", ...}`` (model, sample rate, format, lookahead). The client sends binary
messages, each one ``.npy`` array of frames (``n_mels x t`` floats or ``K x t`` ints), and the text
message ``{"type": "end"}`` to flush. The server answers binary messages of raw little-endian audio
(``pcm16`` or ``f32``) as soon as it is final (a low-latency stream, ``?lookahead_frames=``: as soon as
its lookahead lets it out), then ``{"type": "done", "samples": N}`` and closes
with 1000. A failure is ``{"type": "error", "status", "error", "message"}`` with the HTTP API's status
and message (and ``retry_after``, seconds, where the HTTP answer has ``Retry-After``), and the close
code ``4000 + status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

import numpy as np
import orjson
import torch
from fastapi import APIRouter, Request, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service.errors import (
    MalformedPayloadError,
    PayloadTooLargeError,
    ServerDrainingError,
    UpgradeRequiredError,
)
from service.http.access import CLIENT_CLOSED, log_stream
from service.http.auth import STREAM_SUBPROTOCOL
from service.http.errors import classify, log_level
from service.http.query import StreamFormat, stream_parameters
from service.http.request_io import CutShortError, unless
from service.http.server import abort_connection, stream_message_bytes, unsent_bytes
from service.http.state import ServiceState, state_of
from service.http.stream_inbox import Inbox, check_end_message, frames_of
from service.runtime.audio_io import OutputFormat, pcm_bytes
from service.runtime.serving import Vocoder
from service.runtime.streaming import AudioStream
from vocos_core.streaming import check_lookahead_frames

log = logging.getLogger(__name__)

router = APIRouter()

# Raw little-endian sample formats of the audio messages, as the data of the matching WAV.
FORMATS: dict[StreamFormat, OutputFormat] = {"pcm16": OutputFormat.WAV16, "f32": OutputFormat.WAV32F}
# Application close codes: 4000 + the HTTP status of the error (4000-4999 are the application's).
CLOSE_BASE = 4000
# RFC 6455's close code for a message too big: uvicorn's, for one over stream_message_bytes.
MESSAGE_TOO_BIG = 1009
# Bytes of audio messages that may wait unsent (a client reading slower than real time for a moment)
# before a stream waits for its client to catch up.
UNSENT_BYTES = 4 * 2**20
# The access log's status of a conversation that ended without an exception.
_OUTCOME_STATUS = {"ok": 200, "disconnected": CLIENT_CLOSED}
# Close codes of a connection the WebSocket layer failed for its client's frames (RFC 6455 7.4.1: invalid
# payload, protocol error): the client's malformed input, not a client that left.
_MALFORMED_CLOSE_CODES = frozenset({1002, 1007})


@router.websocket("/stream/mel")
async def stream_mel(websocket: WebSocket) -> None:
    await _serve(websocket, "mel")


@router.get("/stream/mel", include_in_schema=False)
@router.get("/stream/encodec", include_in_schema=False)
async def stream_without_upgrade(request: Request) -> None:
    raise UpgradeRequiredError(
        f"{request.url.path} is a WebSocket endpoint: open it with a WebSocket client (ws:// or wss://, a GET with "
        "'Upgrade: websocket' and 'Connection: Upgrade'); a proxy in front must pass both headers on. Over plain "
        "HTTP, POST to /decode/... with ?stream=true", {"Upgrade": "websocket"})


@router.websocket("/stream/encodec")
async def stream_encodec(websocket: WebSocket) -> None:
    await _serve(websocket, "encodec")


async def _serve(websocket: WebSocket, kind: str) -> None:
    state = state_of(websocket.app)
    request_id = str(websocket.state.request_id)  # the client's X-Request-Id when sane, else a fresh one
    started = time.monotonic()
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=STREAM_SUBPROTOCOL if STREAM_SUBPROTOCOL in offered else None)
    stream: AudioStream | None = None
    outcome, status = "error", 500
    try:
        state.auth.check_stream(websocket.headers.get("authorization"), offered)
        stream, fmt = _open(state, websocket, kind, request_id)
        await _send_start(websocket, stream, fmt)
        outcome = await _converse(websocket, state, stream, fmt)
        status = _OUTCOME_STATUS[outcome]
    except WebSocketDisconnect:
        outcome, status = "disconnected", CLIENT_CLOSED
    except asyncio.CancelledError:  # the connection was torn down under us
        outcome, status = "disconnected", CLIENT_CLOSED
        raise
    except Exception as exc:  # every failure is told to the client, then the connection closes
        classified = classify(exc, request_id)
        status = classified[0]
        if stream is not None:
            stream.close("error")  # counted before the client hears of it
        else:  # refused before it began
            state.metrics.streams_refused.labels(websocket.url.path, str(status)).inc()
        await _send_error(websocket, exc, request_id, classified)
    finally:
        if stream is not None:
            stream.close(outcome)
        if state.settings.access_log:
            samples = stream.samples_out if stream is not None else 0
            log_stream(websocket.scope, status, time.monotonic() - started, samples, request_id)


def _open(state: ServiceState, websocket: WebSocket, kind: str, request_id: str) -> tuple[AudioStream, StreamFormat]:
    query = stream_parameters(websocket.query_params, websocket.url.path)
    vocoder = Vocoder(state)
    slot = vocoder.model(query.model, kind)
    stream = vocoder.open_stream(
        slot, inputs="codes" if kind == "encodec" else "mel", bandwidth_id=query.bandwidth_id,
        bandwidth=query.bandwidth, sample_rate=query.sample_rate, request_id=request_id,
        lookahead_frames=check_lookahead_frames(slot.served.model, query.lookahead_frames),
    )
    return stream, query.format


async def _converse(websocket: WebSocket, state: ServiceState, stream: AudioStream, fmt: StreamFormat) -> str:
    """Chunks in, audio out, until the client's end message (or a failure, raised).

    The client's messages are read ahead (:class:`Inbox`): the chunks that came in while the last step
    computed go to the model together, as one step, so a stream that fell behind catches up in bigger,
    cheaper steps instead of one step per message. A client that leaves while its chunks compute stops
    them: the rest of their steps are not run.
    """
    inbox = Inbox(websocket, state.settings.stream_idle_timeout_s, stream, state.inflight)
    try:
        while True:
            try:  # waiting for the client, or answering it: a disconnect or the drain deadline ends either
                messages = await unless(_first_set(inbox.gone, state.drain_expired), inbox.take())
                outcome = await unless(_first_set(inbox.gone, state.drain_expired),
                                       _answer(websocket, state, stream, fmt, messages))
            except CutShortError:
                if inbox.gone.is_set():
                    return _client_left(inbox.close_code)
                raise ServerDrainingError(
                    "the server is shutting down and the stream was still open at the end of its drain "
                    "(VOCOS_DRAIN_TIMEOUT_S); open a new one"
                ) from None
            if outcome is not None:
                break
    finally:
        inbox.close()
    # Closed out of the watch for the client's leaving: a client that closes as soon as the done message is
    # in (vocos_client does) raced this close, and the stream it had all of was logged as 499, the client's leaving.
    if outcome == "ok":
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await _sent(websocket, websocket.close(1000))
    return outcome


async def _first_set(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _answer(websocket: WebSocket, state: ServiceState, stream: AudioStream, fmt: StreamFormat,
                  messages: list[tuple[float, Any]]) -> str | None:
    """Answer messages that arrived together, in order; the conversation's outcome once it has ended."""
    arrays: list[torch.Tensor] = []
    first = messages[0][0]
    timeout = state.settings.request_timeout_s
    for _, message in messages:
        if isinstance(message, BaseException):  # the read failed (idle timeout): answer what came first
            await _push(websocket, stream, fmt, arrays, first, timeout)
            raise message
        if message.get("type") == "websocket.disconnect":
            return _client_left(message.get("code"))
        try:  # a malformed message fails the stream, once the chunks before it are answered
            if message.get("bytes") is not None:
                arrays.append(stream.check(frames_of(message["bytes"])))
                continue
            check_end_message(message.get("text") or "")
        except Exception:
            await _push(websocket, stream, fmt, arrays, first, timeout)
            raise
        if arrays:
            await _push(websocket, stream, fmt, arrays, first, timeout, final=True)
        else:
            await _send_audio(websocket, await stream.finish(timeout=timeout), fmt)
        done = orjson.dumps({"type": "done", "samples": stream.samples_out}).decode()
        await _sent(websocket, websocket.send_text(done))
        stream.close("ok")  # before the close frame: a client that then reads /metrics finds the stream counted
        return "ok"
    await _push(websocket, stream, fmt, arrays, first, timeout)
    return None


def _client_left(code: int | None) -> str:
    """The outcome of a conversation whose client's side closed with ``code``: "disconnected", or, where the
    WebSocket layer closed it for the client's messages, their error, raised to be answered as any other."""
    if code == MESSAGE_TOO_BIG:  # either side's limit: the close code does not say whose message it was
        raise PayloadTooLargeError("the connection closed with 1009, a message too big: a frame message over this "
                                   "server's max_message_bytes (the start message gives it), or an audio message "
                                   "over the client's own limit (lift it: docs/streaming.md)")
    if code in _MALFORMED_CLOSE_CODES:
        raise MalformedPayloadError(f"a WebSocket frame the server could not parse (close code {code}): "
                                    "expected binary .npy messages and UTF-8 text messages")
    return "disconnected"


async def _push(websocket: WebSocket, stream: AudioStream, fmt: StreamFormat, arrays: list[torch.Tensor],
                arrived: float, timeout: float, final: bool = False) -> None:
    if arrays:
        await _send_audio(websocket, await stream.push_many(arrays, final=final, timeout=timeout, arrived=arrived), fmt)


async def _send_start(websocket: WebSocket, stream: AudioStream, fmt: StreamFormat) -> None:
    served = stream.slot.served
    ahead = stream.lookahead
    await websocket.send_text(orjson.dumps({
        "type": "start", "model": served.name, "sample_rate": stream.sample_rate, "format": fmt,
        "lookahead_frames": ahead.frames, "lookahead_ms": round(ahead.ms, 3), "hop_length": served.model.hop_length,
        "exact": ahead.frames == served.lookahead.frames,
        # The WebSocket layer's own limit (uvicorn's ws_max_size): a client splits its frames to fit, where
        # a larger message would be refused with 1009 while it is still being sent, a race with the close.
        "max_message_bytes": stream_message_bytes(state_of(websocket.app).settings),
    }).decode())


async def _send_audio(websocket: WebSocket, audio: np.ndarray, fmt: StreamFormat) -> None:
    if audio.size:
        await _sent(websocket, websocket.send_bytes(pcm_bytes(audio, FORMATS[fmt])))


async def _sent(websocket: WebSocket, sending: Awaitable[None]) -> None:
    """``sending`` (a send or the close), then a wait while more than ``UNSENT_BYTES`` of the stream's messages
    sit unsent, all within ``VOCOS_SEND_TIMEOUT_S``; past it the connection is dropped. uvicorn's send waits
    while the transport's buffer is over its high-water mark (a client that reads nothing), and below it
    returns at once; unbounded, either would hold the stream, its connection and a shutdown for ever, or
    pile its audio up in the server's memory."""
    timeout_s = state_of(websocket.app).settings.send_timeout_s
    deadline = time.monotonic() + timeout_s
    try:
        await asyncio.wait_for(sending, timeout_s)
        while unsent_bytes(websocket.scope) > UNSENT_BYTES:
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.01)
    except TimeoutError:
        abort_connection(websocket.scope, reset=True)
        log.info("stream %s: the client did not read its audio within %g s (VOCOS_SEND_TIMEOUT_S); "
                 "connection dropped", websocket.state.request_id, timeout_s)
        raise WebSocketDisconnect(1006) from None


async def _send_error(websocket: WebSocket, exc: BaseException, request_id: str,
                      classified: tuple[int, str, str, dict[str, str]]) -> None:
    """``exc``, :func:`classify`'d as ``classified``, logged, then told to the client and the connection closed."""
    status, error_type, message, headers = classified
    log.log(log_level(exc, status), "stream %s: %d %s", request_id, status, exc)
    if status == 500:
        log.error("stream %s failed", request_id, exc_info=exc)
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    try:
        body: dict[str, Any] = {"type": "error", "status": status, "error": error_type, "message": message,
                                "request_id": request_id}
        if "Retry-After" in headers:  # the HTTP answer's header, for a stream refused for now
            body["retry_after"] = int(headers["Retry-After"])
        await _sent(websocket, websocket.send_text(orjson.dumps(body).decode()))
        await _sent(websocket, websocket.close(CLOSE_BASE + status, reason=error_type[:120]))
    except (WebSocketDisconnect, RuntimeError):  # the client has gone already
        pass
