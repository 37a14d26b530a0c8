"""The blocking client: :class:`Client`. Numpy in, numpy out; one :mod:`httpx` connection pool."""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any, Literal, overload

import httpx
import numpy as np

from .chunks import AudioChunks
from .errors import VocosClientError
from .retry import RetryPolicy, call
from .session import frames_iterable, stream_url
from .sync_stream import StreamSession, frames_to_audio, open_session
from .wire import (
    AnswerFormat,
    Audio,
    AudioInput,
    Call,
    StreamFormat,
    check,
    codes_call,
    decoded,
    json_of,
    mel_call,
    models_of,
    resynthesis_call,
)

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """``Client("http://host:8000", api_key=...)``: every endpoint of vocos-serve.

    ``decode_*`` and ``resynthesize`` return :class:`Audio` (float32 ``(S,)``), or with ``stream=True`` an
    :class:`AudioChunks` that yields the samples as the WAV answer arrives. ``stream_mel`` /
    ``stream_encodec`` open a WebSocket stream (:class:`StreamSession`). Errors raise
    :class:`VocosClientError`. ``timeout`` (seconds > 0; None: no limit) bounds each network wait; after
    ``close()`` every call raises RuntimeError. ``retry``: a call the server
    refused for now (429, 502, 503) or that could not connect is tried again, after the server's
    ``Retry-After`` when it names one (:class:`RetryPolicy`: twice by default; ``RetryPolicy(retries=0)``:
    never); so is opening a stream, never a stream once open."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float | None = 60.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.url = base_url(url)
        self.timeout = checked_timeout(timeout)
        self.retry = retry or RetryPolicy()
        self._auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=self._auth, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def models(self) -> list[dict[str, Any]]:
        """GET /models: each served model's name, kind, rate, hop and front-end."""
        return models_of(call(self.retry, lambda: self._json("/models")))

    def health(self) -> dict[str, Any]:
        """GET /healthz; raises (503) when a batching loop has stopped. Probes are not retried."""
        return dict(self._json("/healthz"))

    def ready(self) -> dict[str, Any]:
        """GET /readyz; raises (503) until the models are warmed up, and while draining."""
        return dict(self._json("/readyz"))

    @overload
    def decode_mel(self, mel: np.ndarray, *, model: str | None = ..., sample_rate: int | None = ...,
                   format: AnswerFormat | None = ..., stream: Literal[False] = ...) -> Audio: ...
    @overload
    def decode_mel(self, mel: np.ndarray, *, model: str | None = ..., sample_rate: int | None = ...,
                   format: AnswerFormat | None = ..., stream: Literal[True]) -> AudioChunks: ...
    @overload
    def decode_mel(self, mel: np.ndarray, *, model: str | None = ..., sample_rate: int | None = ...,
                   format: AnswerFormat | None = ..., stream: bool) -> Audio | AudioChunks: ...

    def decode_mel(self, mel: np.ndarray, *, model: str | None = None, sample_rate: int | None = None,
                   format: AnswerFormat | None = None, stream: bool = False) -> Audio | AudioChunks:
        """POST /decode/mel: ``mel`` ``(n_mels, T)`` float32 -> audio ``((T-1) * hop,)`` (center padding).
        ``format``: ``wav32f`` (default, exact floats) or ``wav16``."""
        return self._audio(mel_call(mel, model, sample_rate, format, stream), stream)

    @overload
    def decode_encodec(self, codes: np.ndarray, *, model: str | None = ..., bandwidth_id: int | None = ...,
                       bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                       stream: Literal[False] = ...) -> Audio: ...
    @overload
    def decode_encodec(self, codes: np.ndarray, *, model: str | None = ..., bandwidth_id: int | None = ...,
                       bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                       stream: Literal[True]) -> AudioChunks: ...
    @overload
    def decode_encodec(self, codes: np.ndarray, *, model: str | None = ..., bandwidth_id: int | None = ...,
                       bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                       stream: bool) -> Audio | AudioChunks: ...

    def decode_encodec(self, codes: np.ndarray, *, model: str | None = None, bandwidth_id: int | None = None,
                       bandwidth: float | None = None, sample_rate: int | None = None,
                       format: AnswerFormat | None = None, stream: bool = False) -> Audio | AudioChunks:
        """POST /decode/encodec: ``codes`` ``(K, T)`` ints in [0, 1024) -> audio ``(T * hop,)``; without
        ``bandwidth_id`` (0..3) or ``bandwidth`` (kbps) the server infers it from K."""
        return self._audio(codes_call(codes, model, bandwidth_id, bandwidth, sample_rate, format, stream), stream)

    @overload
    def resynthesize(self, audio: AudioInput, *, model: str | None = ..., bandwidth_id: int | None = ...,
                     bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                     stream: Literal[False] = ...) -> Audio: ...
    @overload
    def resynthesize(self, audio: AudioInput, *, model: str | None = ..., bandwidth_id: int | None = ...,
                     bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                     stream: Literal[True]) -> AudioChunks: ...
    @overload
    def resynthesize(self, audio: AudioInput, *, model: str | None = ..., bandwidth_id: int | None = ...,
                     bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                     stream: bool) -> Audio | AudioChunks: ...

    def resynthesize(self, audio: AudioInput, *, model: str | None = None, bandwidth_id: int | None = None,
                     bandwidth: float | None = None, sample_rate: int | None = None, format: AnswerFormat | None = None,
                     stream: bool = False) -> Audio | AudioChunks:
        """POST /resynthesize: a file path, a file's bytes, or ``(samples (S,) or (S, channels), rate)``
        through the vocoder; the answer lasts as long as the input."""
        return self._audio(resynthesis_call(audio, model, bandwidth_id, bandwidth, sample_rate, format, stream),
                           stream)

    def stream_mel(self, *, model: str | None = None, format: StreamFormat | None = None,
                   sample_rate: int | None = None, lookahead_frames: int | None = None) -> StreamSession:
        """Open ``/stream/mel``: ``with client.stream_mel() as s: s.send(frames (n_mels, t)); s.end();
        for chunk in s: ...`` (send and iterate from different threads to overlap them).
        ``format``: ``pcm16`` (the server's default) or ``f32`` on the wire; chunks are float32 either way.
        ``lookahead_frames`` below the model's exact lookahead (``/models``): lower latency, inexact audio."""
        url = stream_url(self.url, "mel", model=model, format=format, sample_rate=sample_rate,
                         lookahead_frames=lookahead_frames)
        self._check_open()
        return call(self.retry, lambda: open_session(url, self._auth, self.timeout))

    def stream_encodec(self, *, model: str | None = None, bandwidth_id: int | None = None,
                       bandwidth: float | None = None, format: StreamFormat | None = None,
                       sample_rate: int | None = None, lookahead_frames: int | None = None) -> StreamSession:
        """Open ``/stream/encodec``; frames are ``(K, t)`` ints."""
        url = stream_url(self.url, "encodec", model=model, bandwidth_id=bandwidth_id, bandwidth=bandwidth,
                         format=format, sample_rate=sample_rate, lookahead_frames=lookahead_frames)
        self._check_open()
        return call(self.retry, lambda: open_session(url, self._auth, self.timeout))

    def stream_mel_frames(self, frames: Iterable[np.ndarray],
                          **options: Any) -> Generator[np.ndarray, None, None]:
        """Frames ``(n_mels, t_i)`` from ``frames`` (e.g. a TTS model's output, sent as it comes) -> the
        float32 audio chunks, yielded as they are final. ``options``: those of :meth:`stream_mel`."""
        return frames_to_audio(lambda: self.stream_mel(**options), frames_iterable(frames))

    def stream_encodec_frames(self, frames: Iterable[np.ndarray],
                              **options: Any) -> Generator[np.ndarray, None, None]:
        """As :meth:`stream_mel_frames`, with ``(K, t_i)`` codes (options of :meth:`stream_encodec`)."""
        return frames_to_audio(lambda: self.stream_encodec(**options), frames_iterable(frames))

    def _json(self, path: str) -> Any:
        response = self._send(Call("GET", path, {}), stream=False)
        return json_of(response.status_code, response.headers, response.content)

    def _audio(self, request: Call, stream: bool) -> Audio | AudioChunks:
        return call(self.retry, lambda: self._audio_once(request, stream))

    def _audio_once(self, request: Call, stream: bool) -> Audio | AudioChunks:
        response = self._send(request, stream)
        if not stream:
            return decoded(response.status_code, response.headers, response.content)
        try:
            check(response.status_code, response.headers, self._error_body(request, response))
        except BaseException:
            response.close()
            raise
        return AudioChunks(response)

    @staticmethod
    def _error_body(request: Call, response: httpx.Response) -> bytes:
        """The body of a streamed answer that is an error (b"" for a success, whose body is audio)."""
        try:
            return response.read() if response.status_code >= 300 else b""
        except httpx.HTTPError as exc:
            raise connection_error(request, exc) from None

    def _check_open(self) -> None:
        # A stream opened without the closed pool and went on working, so a client's close() did not end its use.
        if self._http.is_closed:
            raise closed_client("Client")

    def _send(self, request: Call, stream: bool) -> httpx.Response:
        self._check_open()
        built = self._http.build_request(request.method, request.path, params=request.params,
                                         content=request.content, headers=request.headers)
        try:
            return self._http.send(built, stream=stream)
        except httpx.HTTPError as exc:
            raise connection_error(request, exc) from None


def base_url(url: str) -> str:
    """The server's ``http(s)://host:port``; ValueError for a URL without its scheme (``127.0.0.1:8000``)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"the server's URL must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def checked_timeout(timeout: float | None) -> float | None:
    """``timeout``, or ValueError: 0 failed every call with "Operation now in progress" (a connection error, so
    retried), a negative one with the socket's "Timeout value out of range", both at the first call."""
    if timeout is not None and not (isinstance(timeout, int | float) and 0 < timeout < float("inf")):
        raise ValueError(f"timeout must be a number of seconds > 0, or None for no limit; got {timeout!r}")
    return timeout


def closed_client(kind: str) -> RuntimeError:
    """A call on a client after its close: a mistake of the program, not of the server or the network."""
    return RuntimeError(f"this {kind} is closed (close() was called, or its with block ended): make a new "
                        f"{kind} for more calls")


def connection_error(request: Call, exc: httpx.HTTPError) -> VocosClientError:
    """A call that got no answer (``"timeout"`` when the client's timeout ran out waiting); ``not_sent`` when
    no connection was made (the server never saw it), ``dropped`` when the server closed it without answering."""
    what = str(exc) or type(exc).__name__  # httpx's timeouts may carry no text
    return VocosClientError(0, "timeout" if isinstance(exc, httpx.TimeoutException) else "connection",
                            f"{request.method} {request.path}: {what}",
                            not_sent=isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout),
                            dropped=_dropped(exc))


def _dropped(exc: httpx.HTTPError) -> bool:
    """The server closed the connection before any byte of an answer: a kept-alive connection that it (or a proxy)
    closed for idleness as the call went out, which no client can rule out, or a replica that went away. Only
    h11's words tell it from a malformed answer, which is no reason to try again."""
    return isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)
