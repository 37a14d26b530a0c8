"""The asyncio client: :class:`AsyncClient`, the methods of :class:`vocos_client.Client` as coroutines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import Any, Literal, overload

import httpx
import numpy as np

from .async_stream import AsyncStreamSession, frames_to_audio, session
from .chunks import AsyncAudioChunks
from .client import DEFAULT_URL, base_url, checked_timeout, closed_client, connection_error
from .retry import RetryPolicy, acall
from .session import frames_iterable, stream_url
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


class AsyncClient:
    """``AsyncClient("http://host:8000", api_key=...)``: every endpoint of vocos-serve.

    ``decode_*`` and ``resynthesize`` return :class:`Audio` (float32 ``(S,)``), or with ``stream=True`` an
    :class:`AsyncAudioChunks` that yields the samples as the WAV answer arrives. ``stream_mel`` /
    ``stream_encodec`` open a WebSocket stream (``async with``, :class:`AsyncStreamSession`). Errors raise
    :class:`VocosClientError`. ``timeout`` (seconds > 0; None: no limit) bounds each network wait; after
    ``aclose()`` every call raises RuntimeError. ``retry``: as
    :class:`vocos_client.Client`'s (calls refused for now, and opening streams, are tried again)."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float | None = 60.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = base_url(url)
        self.timeout = checked_timeout(timeout)
        self.retry = retry or RetryPolicy()
        self._auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._auth, timeout=timeout, transport=transport)
        self._loop: asyncio.AbstractEventLoop | None = None  # the one its connections belong to

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def models(self) -> list[dict[str, Any]]:
        """GET /models: each served model's name, kind, rate, hop and front-end."""
        return models_of(await acall(self.retry, lambda: self._json("/models")))

    async def health(self) -> dict[str, Any]:
        """GET /healthz; raises (503) when a batching loop has stopped. Probes are not retried."""
        return dict(await self._json("/healthz"))

    async def ready(self) -> dict[str, Any]:
        """GET /readyz; raises (503) until the models are warmed up, and while draining."""
        return dict(await self._json("/readyz"))

    @overload
    async def decode_mel(self, mel: np.ndarray, *, model: str | None = ..., sample_rate: int | None = ...,
                   format: AnswerFormat | None = ..., stream: Literal[False] = ...) -> Audio: ...
    @overload
    async def decode_mel(self, mel: np.ndarray, *, model: str | None = ..., sample_rate: int | None = ...,
                   format: AnswerFormat | None = ..., stream: Literal[True]) -> AsyncAudioChunks: ...
    @overload
    async def decode_mel(self, mel: np.ndarray, *, model: str | None = ..., sample_rate: int | None = ...,
                   format: AnswerFormat | None = ..., stream: bool) -> Audio | AsyncAudioChunks: ...

    async def decode_mel(self, mel: np.ndarray, *, model: str | None = None, sample_rate: int | None = None,
                   format: AnswerFormat | None = None, stream: bool = False) -> Audio | AsyncAudioChunks:
        """POST /decode/mel: ``mel`` ``(n_mels, T)`` float32 -> audio ``((T-1) * hop,)`` (center padding).
        ``format``: ``wav32f`` (default, exact floats) or ``wav16``."""
        return await self._audio(mel_call(mel, model, sample_rate, format, stream), stream)

    @overload
    async def decode_encodec(self, codes: np.ndarray, *, model: str | None = ..., bandwidth_id: int | None = ...,
                       bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                       stream: Literal[False] = ...) -> Audio: ...
    @overload
    async def decode_encodec(self, codes: np.ndarray, *, model: str | None = ..., bandwidth_id: int | None = ...,
                       bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                       stream: Literal[True]) -> AsyncAudioChunks: ...
    @overload
    async def decode_encodec(self, codes: np.ndarray, *, model: str | None = ..., bandwidth_id: int | None = ...,
                       bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                       stream: bool) -> Audio | AsyncAudioChunks: ...

    async def decode_encodec(self, codes: np.ndarray, *, model: str | None = None, bandwidth_id: int | None = None,
                       bandwidth: float | None = None, sample_rate: int | None = None,
                       format: AnswerFormat | None = None, stream: bool = False) -> Audio | AsyncAudioChunks:
        """POST /decode/encodec: ``codes`` ``(K, T)`` ints in [0, 1024) -> audio ``(T * hop,)``; without
        ``bandwidth_id`` (0..3) or ``bandwidth`` (kbps) the server infers it from K."""
        return await self._audio(codes_call(codes, model, bandwidth_id, bandwidth, sample_rate, format, stream), stream)

    @overload
    async def resynthesize(self, audio: AudioInput, *, model: str | None = ..., bandwidth_id: int | None = ...,
                     bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                     stream: Literal[False] = ...) -> Audio: ...
    @overload
    async def resynthesize(self, audio: AudioInput, *, model: str | None = ..., bandwidth_id: int | None = ...,
                     bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                     stream: Literal[True]) -> AsyncAudioChunks: ...
    @overload
    async def resynthesize(self, audio: AudioInput, *, model: str | None = ..., bandwidth_id: int | None = ...,
                     bandwidth: float | None = ..., sample_rate: int | None = ..., format: AnswerFormat | None = ...,
                     stream: bool) -> Audio | AsyncAudioChunks: ...

    async def resynthesize(self, audio: AudioInput, *, model: str | None = None, bandwidth_id: int | None = None,
                     bandwidth: float | None = None, sample_rate: int | None = None, format: AnswerFormat | None = None,
                     stream: bool = False) -> Audio | AsyncAudioChunks:
        """POST /resynthesize: a file path, a file's bytes, or ``(samples (S,) or (S, channels), rate)``
        through the vocoder; the answer lasts as long as the input."""
        return await self._audio(resynthesis_call(audio, model, bandwidth_id, bandwidth, sample_rate, format, stream),
                           stream)

    def stream_mel(self, *, model: str | None = None, format: StreamFormat | None = None,
                   sample_rate: int | None = None,
                   lookahead_frames: int | None = None) -> contextlib.AbstractAsyncContextManager[AsyncStreamSession]:
        """Open ``/stream/mel``: ``async with client.stream_mel() as s: await s.send(frames (n_mels, t));
        await s.end(); async for chunk in s: ...`` (iterate in another task to overlap them).
        ``format``: ``pcm16`` (the server's default) or ``f32`` on the wire; chunks are float32 either way.
        ``lookahead_frames`` below the model's exact lookahead (``/models``): lower latency, inexact audio."""
        url = stream_url(self.url, "mel", model=model, format=format, sample_rate=sample_rate,
                         lookahead_frames=lookahead_frames)
        self._check_open()
        return session(url, self._auth, self.timeout, self.retry)

    def stream_encodec(self, *, model: str | None = None, bandwidth_id: int | None = None,
                       bandwidth: float | None = None, format: StreamFormat | None = None,
                       sample_rate: int | None = None,
                   lookahead_frames: int | None = None) -> contextlib.AbstractAsyncContextManager[AsyncStreamSession]:
        """Open ``/stream/encodec``; frames are ``(K, t)`` ints."""
        url = stream_url(self.url, "encodec", model=model, bandwidth_id=bandwidth_id, bandwidth=bandwidth,
                         format=format, sample_rate=sample_rate, lookahead_frames=lookahead_frames)
        self._check_open()
        return session(url, self._auth, self.timeout, self.retry)

    def stream_mel_frames(self, frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
                          **options: Any) -> AsyncGenerator[np.ndarray, None]:
        """Frames ``(n_mels, t_i)`` from a sync or async iterable (e.g. a TTS model's output, sent as it comes)
        -> the float32 audio chunks as they are final: ``async for chunk in client.stream_mel_frames(tts())``.
        ``options``: those of :meth:`stream_mel`."""
        return frames_to_audio(self.stream_mel(**options), frames_iterable(frames))

    def stream_encodec_frames(self, frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
                              **options: Any) -> AsyncGenerator[np.ndarray, None]:
        """As :meth:`stream_mel_frames`, with ``(K, t_i)`` codes (options of :meth:`stream_encodec`)."""
        return frames_to_audio(self.stream_encodec(**options), frames_iterable(frames))

    async def _json(self, path: str) -> Any:
        response = await self._send(Call("GET", path, {}), stream=False)
        return json_of(response.status_code, response.headers, response.content)

    async def _audio(self, request: Call, stream: bool) -> Audio | AsyncAudioChunks:
        return await acall(self.retry, lambda: self._audio_once(request, stream))

    async def _audio_once(self, request: Call, stream: bool) -> Audio | AsyncAudioChunks:
        response = await self._send(request, stream)
        if not stream:
            return decoded(response.status_code, response.headers, response.content)
        try:
            check(response.status_code, response.headers, await self._error_body(request, response))
        except BaseException:
            await response.aclose()
            raise
        return await AsyncAudioChunks.opened(response)

    @staticmethod
    async def _error_body(request: Call, response: httpx.Response) -> bytes:
        """The body of a streamed answer that is an error (b"" for a success, whose body is audio)."""
        try:
            return await response.aread() if response.status_code >= 300 else b""
        except httpx.HTTPError as exc:
            raise connection_error(request, exc) from None

    def _check_open(self) -> None:
        if self._http.is_closed:
            raise closed_client("AsyncClient")

    async def _send(self, request: Call, stream: bool) -> httpx.Response:
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:  # its pooled connections died with the first loop: a clear error, not httpx's
            raise RuntimeError("an AsyncClient serves the event loop it was first used in (each asyncio.run() "
                               "makes a new one); make an AsyncClient per loop, or use Client outside asyncio")
        built = self._http.build_request(request.method, request.path, params=request.params,
                                         content=request.content, headers=request.headers)
        try:
            return await self._http.send(built, stream=stream)
        except httpx.HTTPError as exc:
            raise connection_error(request, exc) from None
