"""What the sync and async WebSocket sessions share: the URL, the start message, and what each message means.

Protocol (docs/streaming.md): the server opens with ``{"type": "start", ...}``; the client sends binary
``.npy`` frames and ``{"type": "end"}``; the server sends binary raw little-endian audio, then
``{"type": "done", "samples": N}`` and closes with 1000, or ``{"type": "error", ...}`` and closes with
``4000 + status``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import Protocol

from .errors import VocosClientError, from_http, from_stream, protocol_error, retry_after
from .wire import STREAM_FORMATS, codes_body, mel_body, npy_bytes, pcm_samples, query

END = json.dumps({"type": "end"})
# RFC 6455's close code for a message too big to process.
MESSAGE_TOO_BIG = 1009
# What both sessions pass to websockets' connect(). max_size=None: the server sends one audio message per
# frame message, and a push of many frames at a high ``sample_rate`` in f32 makes a message of hundreds of
# MB, all of it audio the caller asked for (the server bounds a stream's audio: MAX_STREAM_AUDIO_SECONDS).
# compression=None: float frames and audio do not compress, and deflate costs both ends CPU.
CONNECT_OPTIONS: dict[str, Any] = {"max_size": None, "compression": None}

T = TypeVar("T")


def cannot_open(url: str, exc: BaseException) -> VocosClientError:
    """No stream: the connection or its handshake failed; ``not_sent`` when no connection was made at all
    (refused, or a host name that resolves to nothing)."""
    if isinstance(exc, TimeoutError):  # the handshake outlasted the client's timeout
        return VocosClientError(0, "timeout", f"cannot open {url} within the timeout: {exc}")
    return VocosClientError(0, "connection", f"cannot open {url}: {exc}",
                            not_sent=isinstance(exc, ConnectionError | socket.gaierror))


def no_start(timeout: float | None) -> VocosClientError:
    """The connection opened but the server's start message did not come in time."""
    return VocosClientError(0, "timeout", f"the server sent no start message within {timeout} s")


def handshake_refused(exc: InvalidStatus) -> VocosClientError:
    """The error of a handshake the server answered with an HTTP status: the API's JSON error when its body
    holds one (type, message, request id, as for any HTTP answer), else the status and what came back."""
    response = exc.response
    body = bytes(response.body or str(exc).encode())
    return from_http(response.status_code, body, response.headers.get("x-request-id"),
                     retry_after(response.headers.get("retry-after")))


@dataclass(frozen=True)
class StreamInfo:
    """The server's start message: the model, the rate and format of the audio it sends, and its lookahead
    (how many frames beyond a sample it needs before the sample is sent; ``lookahead_ms`` in audio time);
    ``exact``: the model's full lookahead, so the audio equals the offline decode (else a low-latency stream)."""

    model: str
    sample_rate: int
    format: str
    lookahead_frames: int
    lookahead_ms: float
    hop_length: int
    exact: bool = True
    max_message_bytes: int | None = None  # the server's largest stream message; None: not said


@dataclass(frozen=True)
class Done:
    """The server's done message: ``samples`` in all."""

    samples: int


# Frames a healthy server may take in without a word: beyond the lookahead, the inverse STFT's half window (2
# frames for the official models, 4 for an n_fft of 2048) and the resampler's hold-back (soxr HQ holds up to 7
# one-frame pushes at 24 -> 11.025 kHz, measured), with room to spare.
UNANSWERED_FRAMES = 16


class ReplyClock:
    """How long a session may wait for the server's next message: the client's ``timeout``, counted only while
    the server owes one. It owes audio once more than the lookahead's frames plus :data:`UNANSWERED_FRAMES` are in
    and more than :data:`UNANSWERED_FRAMES` were sent since its last message (they make audio final that it
    sends at once), and the done message from the end on. A producer that pauses (a TTS waiting for its next
    sentence) owes the server frames, not the other way round: the server's idle timeout and the connection's
    keepalive bound that wait, not this clock.
    """

    def __init__(self, timeout: float | None, lookahead_frames: int) -> None:
        self.timeout = timeout
        self._lookahead = lookahead_frames
        self._frames = 0
        self._unanswered = 0  # frames sent since the server's last message
        self._end = False
        self._owed_since: float | None = None  # monotonic time the server began to owe a message
        # The producer's thread (sending, sent, ended) and the consumer's (heard) change the state: a heard()
        # between ended()'s steps left the clock stopped with the end sent, and a server that then hung was
        # waited for ever.
        self._lock = threading.Lock()

    def sending(self, frames: int) -> None:
        """``frames`` frames are about to go out. Counted before they do, so that a reply heard before
        :meth:`sent` (a fast server) answers them rather than leaving them owed."""
        with self._lock:
            self._frames += frames
            self._unanswered += frames

    def sent(self) -> None:
        """What :meth:`sending` announced went out: the clock starts if a message is owed now (not before the
        send, whose own time is the link's, bounded by the send timeout)."""
        with self._lock:
            owed = self._frames > self._lookahead + UNANSWERED_FRAMES and self._unanswered > UNANSWERED_FRAMES
            if self._owed_since is None and owed:
                self._owed_since = time.monotonic()

    def ended(self) -> None:
        with self._lock:
            if self._owed_since is None:
                self._owed_since = time.monotonic()
            self._end = True

    def heard(self) -> None:
        """A message came: nothing more is owed until more frames, except after the end (the rest, done)."""
        with self._lock:
            self._unanswered = 0
            self._owed_since = time.monotonic() if self._end else None

    def wait(self) -> float | None:
        """Seconds to wait before asking :meth:`expired` (None: no limit)."""
        since = self._owed_since
        if self.timeout is None or since is None:
            return self.timeout
        return max(0.0, since + self.timeout - time.monotonic())

    def expired(self) -> bool:
        since = self._owed_since
        return self.timeout is not None and since is not None and time.monotonic() >= since + self.timeout

    def error(self) -> VocosClientError:
        return VocosClientError(0, "timeout", f"no message from the server for {self.timeout} s while it owed one "
                                "(audio for the frames sent, or the done message after the end)")


def frame_count(frames: np.ndarray) -> int:
    """Frames in a push ``(C, t)`` or ``(1, C, t)`` (0 for what has no time axis; the server refuses it)."""
    shape = np.shape(frames)
    return int(shape[-1]) if len(shape) >= 2 else 0


def stream_url(base: str, kind: str, **params: Any) -> str:
    """``http://host:port`` -> ``ws://host:port/stream/<kind>?...`` (``https`` -> ``wss``)."""
    fmt = params.get("format")
    if fmt is not None and fmt not in STREAM_FORMATS:
        raise ValueError(f"format must be one of {', '.join(STREAM_FORMATS)}, got {fmt!r}")
    scheme, rest = base.rstrip("/").split("://", 1)
    ws = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    given = query(**params)
    return f"{ws}://{rest}/stream/{kind}" + (f"?{urlencode(given)}" if given else "")


def start_info(message: str | bytes) -> StreamInfo:
    """The first message -> :class:`StreamInfo`; raises the server's error if it sent one instead."""
    parsed = _json(message)
    if parsed.get("type") == "error":
        raise _server_error(message, parsed)
    if parsed.get("type") != "start":
        raise protocol_error(f"expected the start message, got {str(message)[:80]!r}")

    def read() -> StreamInfo:
        return StreamInfo(str(parsed["model"]), int(parsed["sample_rate"]), str(parsed["format"]),
                          int(parsed["lookahead_frames"]), float(parsed["lookahead_ms"]), int(parsed["hop_length"]),
                          bool(parsed.get("exact", True)), _optional_int(parsed.get("max_message_bytes")))

    info = _fields(message, "a start message with model, sample_rate, format, lookahead_frames, lookahead_ms and "
                   "hop_length", read)
    if info.format not in STREAM_FORMATS:  # the audio messages could not be read
        raise protocol_error(f"expected a start message with a format of {', '.join(STREAM_FORMATS)}, "
                             f"got {info.format!r}")
    return info


def _fields(message: str | bytes, expected: str, make: Callable[[], T]) -> T:
    """``make()`` from a message's fields; a protocol error where one is missing or of the wrong type, not the
    KeyError or ValueError of reading it (which, in a session's receiver, left the stream waiting for its
    timeout)."""
    try:
        return make()
    except (KeyError, TypeError, ValueError):
        raise protocol_error(f"expected {expected}, got {str(message)[:120]!r}") from None


def _server_error(message: str | bytes, parsed: dict[str, Any]) -> VocosClientError:
    """The server's error message as the error it reports (a protocol error if its status is no number)."""
    return _fields(message, "an error message with a numeric status", lambda: from_stream(parsed))


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def frame_messages(frames: np.ndarray, max_bytes: int | None) -> list[bytes]:
    """Frames ``(C, t)`` (or ``(1, C, t)``, as EnCodec's encode gives codes) -> ``.npy`` messages (float32, or int64
    codes), split along ``t`` so that each fits the server's ``max_bytes``: the frames of one push may be as many as
    the caller likes, and pieces are what the stream takes anyway. Raises 413 where one frame alone is too big."""
    # As a request's body (floats as float32, integers as int64, anything else as it is): a cast of booleans or of
    # uint64 past int64 would have the server name a dtype or value the caller never sent.
    array = codes_body(mel_body(frames))
    whole = npy_bytes(array)
    # (1, C, t) too, which the server takes as (C, t): unsplit, a long push of it was closed with 1009.
    splittable = array.ndim == 2 or (array.ndim == 3 and array.shape[0] == 1)
    if max_bytes is None or len(whole) <= max_bytes or not splittable or array.shape[-1] <= 1:
        return [whole]
    # The .npy header is padded to a multiple of 64 bytes; a shorter piece's header is never longer.
    header = len(whole) - array.nbytes
    frame_bytes = array[..., :1].nbytes
    per_message = (max_bytes - header) // frame_bytes
    if per_message < 1:
        raise VocosClientError(413, "payload_too_large", f"one frame is {frame_bytes + header} bytes as a message; "
                               f"the server takes at most {max_bytes} (max_message_bytes)")
    return [npy_bytes(array[..., i:i + per_message]) for i in range(0, array.shape[-1], per_message)]


def frames_iterable(frames: T) -> T:
    """``frames`` of a ``stream_*_frames`` loop, refused when it is one ``(C, T)`` (or ``(T,)``) array, numpy's or
    another library's: iterating it sends its rows, ``(T,)`` each, which the server refused with an error about a
    shape the caller never gave. A ``(N, C, t)`` stack of chunks iterates into chunks, and goes on."""
    if getattr(frames, "ndim", None) in (1, 2):
        shape = tuple(getattr(frames, "shape", ()))
        raise ValueError(f"frames must be an iterable of (C, t) arrays as the TTS emits them, got one array of "
                         f"shape {shape}: pass [frames] to send it whole, or an iterable of its pieces")
    return frames


def meaning(message: str | bytes, fmt: str) -> np.ndarray | Done:
    """One later message -> float32 audio ``(S,)`` or :class:`Done`; raises the server's error message."""
    if isinstance(message, bytes):
        return pcm_samples(message, fmt)
    parsed = _json(message)
    if parsed.get("type") == "done":
        return _fields(message, "a done message with an integer samples",
                       lambda: Done(int(parsed.get("samples", 0))))
    if parsed.get("type") == "error":
        raise _server_error(message, parsed)
    raise protocol_error(f"unexpected message {message[:80]!r}")


def closed_early(code: int | None, reason: str) -> VocosClientError:
    """The connection closed before the done message; a 4000+status code still carries the status."""
    if code is not None and 4000 <= code < 5000:
        return VocosClientError(code - 4000, reason or "error", f"the server closed the stream with code {code}")
    if code == MESSAGE_TOO_BIG:  # the server's WebSocket layer refused a message before the stream saw it
        return VocosClientError(413, "payload_too_large", "a message was larger than the server takes "
                                "(its start message's max_message_bytes); send the frames in smaller chunks")
    return VocosClientError(0, "connection", f"the stream closed before it was done (code {code}, {reason!r})")


def closed_by(exc: ConnectionClosed) -> VocosClientError:
    """:func:`closed_early` of the close frame ``exc`` received, if one came."""
    return closed_early(exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "")


def closed_here() -> VocosClientError:
    """A send, end or iteration after the caller closed the session itself: the error named the close code
    (1000) as if the server had ended the stream."""
    return VocosClientError(0, "connection", "this stream was closed by its own side (close(), or its with block "
                            "ended) before the server's done message: open a new stream")


def closed_after(protocol: Protocol, closed_by_caller: bool) -> VocosClientError:
    """Why a stream's connection ended before the done message: :func:`closed_here` after the caller's close,
    unless the server's close frame came first (its error had not reached the receiver when the caller closed)."""
    if closed_by_caller and not protocol.close_rcvd_then_sent:
        return closed_here()
    return closed_early(protocol.close_code, protocol.close_reason or "")


def stream_ended() -> VocosClientError:
    """A send after the server's done message."""
    return VocosClientError(0, "connection", "the stream has ended (its done message came); open a new one")


def send_timed_out(timeout: float | None, error: VocosClientError | None) -> VocosClientError:
    """A send the server took none of within the client's timeout: it stopped reading (stopped, overloaded, or
    the network between broke); the stream is closed. The server's ``error`` instead where it sent one first; not
    the receiver's own "closed" (status 0), which is this timeout seen from its side."""
    if error is not None and error.status:
        return error
    return VocosClientError(0, "timeout", f"the server did not take a message within {timeout} s (it stopped "
                            "reading, or the link is too slow for the message in that time); the stream is closed")


def sent_after_end() -> VocosClientError:
    """A send or end after ``end()``: the server flushes and closes at the end and ignores what follows it, so
    frames sent then would be lost without a word."""
    return VocosClientError(0, "connection", "end() was already called on this stream: it takes no more frames; "
                            "send every frame before end(), or open a new stream")


def _json(message: str | bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(message)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise protocol_error(f"expected a JSON object message, got {str(message)[:80]!r}")
    return parsed
