"""The service without HTTP: decoding and resynthesis as plain async calls (:class:`Vocoder`).

Routes parse the wire format, call these, and encode what they return; nothing here knows of
requests, responses or FastAPI. Each call takes parsed arrays (or an audio file's bytes) and a
deadline, checks their meaning against the chosen model (``vocos_core.requests``), runs them
through that model's batching engine, and returns :class:`Audio`. A streaming call, an async
iterator of audio chunks, fits beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from service.engine.workers import Analysis
from service.errors import InvalidInputError, PayloadTooLargeError, beyond
from service.runtime.audio_io import (
    DecodedAudio,
    OutputFormat,
    decode_audio,
    encode_audio,
    fit_length,
    resample,
    resampled_length,
)
from service.runtime.inflight import InflightBytes
from service.runtime.metrics import ServiceMetrics
from service.runtime.models import ServedModel
from service.runtime.slot import ModelSlot
from service.runtime.streaming import AudioStream, StreamInputs, StreamLimits, check_stream_seconds, refuse_impossible
from service.settings import Settings
from vocos_core.mel_check import check_mel
from vocos_core.requests import codes_array, mel_array, resolve_bandwidth_id

# Audio this long or shorter is resampled and encoded on the event loop: a thread
# hop costs more.
INLINE_AUDIO_SAMPLES = 240_000
# Frames per push when a whole input is answered as a stream (?stream=true): small enough that the
# first audio leaves after one short step, each push a fair share of the engine between streams.
STREAMED_PUSH_FRAMES = 128


@dataclass(frozen=True)
class Audio:
    """The answer to one request: mono float32 ``samples`` ``(S,)`` at ``sample_rate``, from ``model``."""

    samples: np.ndarray
    sample_rate: int
    model: ServedModel
    warning: str | None = None  # the input looks like another front-end's: "cause: explanation"
    encoded: bytes | None = None  # the answer's body, when the caller asked for it in a format (``encode``)

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass(frozen=True)
class StreamedAudio:
    """An answer sent as it is computed: ``samples`` in all (known up front, for a WAV header), then
    ``chunks`` of float32 samples at ``sample_rate`` adding up to exactly that many."""

    samples: int
    sample_rate: int
    model: ServedModel
    chunks: AsyncIterator[np.ndarray]
    # Ends what the answer holds (its stream, its analysis) when ``chunks`` was not read to its end,
    # or not at all (a client gone before the body began): call it once the answer is over. Idempotent.
    release: Callable[[], None]
    warning: str | None = None


class ServedModels(Protocol):
    """What the serving layer needs of the running service (the HTTP app's ``ServiceState`` is one):
    its settings, its metrics, its byte budget, and the served model a request names."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> ServiceMetrics: ...

    @property
    def inflight(self) -> InflightBytes: ...

    def model(self, name: str | None, kind: str | None = None, hint: str = "") -> ModelSlot: ...


class Vocoder:
    """Decode mel spectrograms and EnCodec tokens, and resynthesize audio, with the served models of
    ``state``. ``deadline`` is a ``time.monotonic()`` instant; ``sample_rate`` resamples the answer."""

    def __init__(self, state: ServedModels) -> None:
        self.state = state

    def model(self, name: str | None, kind: str | None, hint: str = "") -> ModelSlot:
        """The served model for a request (:meth:`ServedModels.model`): check it before reading a body."""
        return self.state.model(name, kind, hint)

    async def decode_mel(self, slot: ModelSlot, mel: np.ndarray, *, deadline: float, request_id: str = "",
                         sample_rate: int | None = None, request_bytes: int = 0,
                         encode: OutputFormat | None = None) -> Audio:
        """``mel`` ``(n_mels, T)`` (or ``(1, n_mels, T)``), any float dtype -> its audio. ``request_bytes``: the
        request's own bytes in the server's byte budget (its body), beside which its answer must fit; ``encode``:
        the answer's body is made in this format too (``Audio.encoded``), while the answer is held in the budget.

        The mel is held to the model's front-end (``vocos_core.mel_check``): one it cannot produce is
        refused; one that looks like another front-end's (dB-scaled, log10, normalised...) is decoded,
        with a warning in the answer.
        """
        grid, warning = self._mel(slot.served, mel)
        audio = await self._vocode(slot, torch.from_numpy(grid), None, deadline, request_id, sample_rate,
                                   request_bytes, encode)
        return dataclasses.replace(audio, warning=warning) if warning else audio

    async def decode_codes(self, slot: ModelSlot, codes: np.ndarray, *, bandwidth_id: int | None = None,
                           bandwidth: float | None = None, deadline: float, request_id: str = "",
                           sample_rate: int | None = None, request_bytes: int = 0,
                           encode: OutputFormat | None = None) -> Audio:
        """EnCodec tokens ``(K, T)`` -> audio; the bandwidth from its id, its kbps, or K (``request_bytes``,
        ``encode``: as :meth:`decode_mel`'s)."""
        grid, resolved = self._codes(slot.served, codes, bandwidth_id, bandwidth)
        return await self._vocode(slot, torch.from_numpy(grid), resolved, deadline, request_id, sample_rate,
                                  request_bytes, encode)

    async def resynthesize(self, slot: ModelSlot, audio_file: bytes, *, bandwidth_id: int | None = None,
                           bandwidth: float | None = None, deadline: float, request_id: str = "",
                           sample_rate: int | None = None, request_bytes: int = 0,
                           encode: OutputFormat | None = None) -> Audio:
        """An audio file (any rate, mixed to mono) through the model: exactly as long as the file,
        ``round(frames * rate_out / rate_in)`` samples (the vocoder's output padded or trimmed at the end)."""
        resolved = self._resynthesis_bandwidth(slot.served, bandwidth_id, bandwidth)
        upload = await self._upload(slot, audio_file, deadline)
        with self.state.inflight.answer_held(upload.length_at(sample_rate or slot.served.sample_rate),
                                             request_bytes):
            features = await slot.features.run(slot.served.analysis, upload.samples, resolved,
                                               size=upload.samples.size, timeout=deadline - time.monotonic())
            return await self._vocode(slot, features, resolved, deadline, request_id, sample_rate, encode=encode,
                                      upload=upload)

    def open_stream(self, slot: ModelSlot, *, inputs: StreamInputs, bandwidth_id: int | None = None,
                    bandwidth: float | None = None, sample_rate: int | None = None, request_id: str = "",
                    transport: str = "websocket", lookahead_frames: int | None = None) -> AudioStream:
        """A stream of mel frames, EnCodec tokens or features (``inputs``); the caller must ``close`` it.
        ``lookahead_frames`` below the model's exact lookahead: a low-latency stream, not exact."""
        settings = self.state.settings
        limits = StreamLimits(settings.max_stream_audio_seconds, settings.max_stream_duration_s)
        return AudioStream(slot, self.state.metrics, limits, inputs=inputs, bandwidth_id=bandwidth_id,
                           bandwidth=bandwidth, sample_rate=sample_rate, request_id=request_id, transport=transport,
                           lookahead_frames=lookahead_frames)

    async def stream_mel(self, slot: ModelSlot, mel: np.ndarray, *, deadline: float, request_id: str = "",
                         sample_rate: int | None = None) -> StreamedAudio:
        """:meth:`decode_mel`, its audio sent as it is computed."""
        grid, warning = self._mel(slot.served, mel)
        # Checked whole just now (kind, front-end): as "features", its pushes are not checked again frame by frame,
        # which could refuse a prefix whose outliers the whole mel dilutes, after the answer has begun.
        stream = self.open_stream(slot, inputs="features", sample_rate=sample_rate, request_id=request_id,
                                  transport="http")
        return self._streamed(stream, grid, deadline, warning)

    async def stream_codes(self, slot: ModelSlot, codes: np.ndarray, *, bandwidth_id: int | None = None,
                           bandwidth: float | None = None, deadline: float, request_id: str = "",
                           sample_rate: int | None = None) -> StreamedAudio:
        """:meth:`decode_codes`, its audio sent as it is computed."""
        grid, resolved = self._codes(slot.served, codes, bandwidth_id, bandwidth)
        stream = self.open_stream(slot, inputs="codes", bandwidth_id=resolved, sample_rate=sample_rate,
                                  request_id=request_id, transport="http")
        return self._streamed(stream, grid, deadline)

    async def stream_resynthesis(self, slot: ModelSlot, audio_file: bytes, *, bandwidth_id: int | None = None,
                                 bandwidth: float | None = None, deadline: float, request_id: str = "",
                                 sample_rate: int | None = None) -> StreamedAudio:
        """:meth:`resynthesize`, its audio sent as it is computed. The answer begins once the analysis
        has made its first features (so a full queue or a bad upload is still a status of its own);
        the rest is decoded as the analysis makes it."""
        served = slot.served
        resolved = self._resynthesis_bandwidth(served, bandwidth_id, bandwidth)
        upload = await self._upload(slot, audio_file, deadline)
        # Before the answer begins, which a limit met halfway could only break off.
        check_stream_seconds(upload.samples.size / served.sample_rate, self.state.settings.max_stream_audio_seconds)
        analysis = slot.features.start(served.analysis, upload.samples, resolved, size=upload.samples.size,
                                       deadline=deadline)
        try:
            first = await anext(analysis)
            stream = self.open_stream(slot, inputs="features", bandwidth_id=resolved, sample_rate=sample_rate,
                                      request_id=request_id, transport="http")
        except BaseException:
            analysis.close()
            raise
        stream.fit_length(upload.samples.size)
        total = upload.length_at(stream.sample_rate)
        chunks = _fitted(_pushed(stream, _analysed(first, analysis), deadline), total)

        def release() -> None:
            analysis.close()
            stream.close("disconnected")

        return StreamedAudio(total, stream.sample_rate, served, chunks, release)

    def _streamed(self, stream: AudioStream, grid: np.ndarray, deadline: float,
                  warning: str | None = None) -> StreamedAudio:
        served = stream.slot.served
        try:
            self._check_frames(served, grid.shape[-1])
            # Before the answer begins, which a limit met halfway could only break off.
            check_stream_seconds(served.seconds(grid.shape[-1]), self.state.settings.max_stream_audio_seconds)
        except BaseException:
            stream.close("error")
            raise
        total = _answer_length(served, grid.shape[-1], stream.sample_rate)
        chunks = _fitted(_pushed(stream, _whole(grid), deadline), total)
        return StreamedAudio(total, stream.sample_rate, served, chunks, lambda: stream.close("disconnected"), warning)

    async def _upload(self, slot: ModelSlot, audio_file: bytes, deadline: float) -> DecodedAudio:
        """An upload decoded to mono float32 ``(S,)`` at the model's rate, once its audio path can run."""
        served = slot.served
        await served.audio_path.require(timeout=deadline - time.monotonic())
        settings = self.state.settings
        upload = await asyncio.to_thread(decode_audio, audio_file, served.sample_rate, settings.max_audio_seconds,
                                         min_rate=settings.min_sample_rate)
        if upload.samples.size < served.min_audio_samples:
            # The fewest frames whose length at the model's rate (rounded, halves up) is enough.
            needed = -(-(2 * served.min_audio_samples - 1) * upload.rate // (2 * served.sample_rate))  # exact ceil
            raise InvalidInputError(
                f"the audio is too short: {upload.frames} samples at {upload.rate} Hz; the {served.kind} model "
                f"needs at least {served.min_audio_samples / served.sample_rate * 1000:.3g} ms ({needed} samples "
                f"at {upload.rate} Hz)"
            )
        return upload

    async def _vocode(self, slot: ModelSlot, features: torch.Tensor, bandwidth_id: int | None, deadline: float,
                      request_id: str, sample_rate: int | None, request_bytes: int = 0,
                      encode: OutputFormat | None = None, upload: DecodedAudio | None = None) -> Audio:
        """``features`` ``(C, T)`` (mel, codes or resynthesis features) through the model's engine;
        ``upload``, for a resynthesis: the answer lasts exactly as long, at the model's rate before resampling
        (as a streamed answer's audio is cut) and at ``sample_rate`` after it."""
        served = slot.served
        self._check_frames(served, features.shape[-1])
        # A resynthesis holds its answer's bytes from before its analysis.
        held = contextlib.nullcontext() if upload is not None else \
            self.state.inflight.answer_held(_answer_length(served, features.shape[-1],
                                                           sample_rate or served.sample_rate), request_bytes)
        with held:
            audio = await self._decoded(slot, features, bandwidth_id, deadline, request_id, sample_rate, upload)
            # Still held: the body and the samples it is made from are the answer's memory as much as its compute.
            return audio if encode is None else dataclasses.replace(audio, encoded=await _encoded(audio, encode))

    async def _decoded(self, slot: ModelSlot, features: torch.Tensor, bandwidth_id: int | None, deadline: float,
                       request_id: str, sample_rate: int | None, upload: DecodedAudio | None) -> Audio:
        """:meth:`_vocode`'s computation, once the answer's bytes are held."""
        served = slot.served
        output = await slot.engine.submit(features, bandwidth_id=bandwidth_id, timeout=deadline - time.monotonic(),
                                          request_id=request_id)
        samples = output.numpy() if upload is None else fit_length(output.numpy(), upload.samples.size)
        if sample_rate is not None and sample_rate != served.sample_rate:
            if samples.size <= INLINE_AUDIO_SAMPLES:
                samples = resample(samples, served.sample_rate, sample_rate)
            else:
                samples = await asyncio.to_thread(resample, samples, served.sample_rate, sample_rate)
        if upload is not None:
            samples = fit_length(samples, upload.length_at(sample_rate or served.sample_rate))
        audio = Audio(samples, sample_rate or served.sample_rate, served)
        self.state.metrics.add_audio(served.name, audio.seconds)
        return audio

    def _mel(self, served: ServedModel, mel: np.ndarray) -> tuple[np.ndarray, str | None]:
        """A request's mel checked against the model: the float32 grid and any front-end warning."""
        grid = mel_array(mel, served.n_features)
        return grid, self._check_mel(served, grid)

    @staticmethod
    def _codes(served: ServedModel, codes: np.ndarray, bandwidth_id: int | None,
               bandwidth: float | None) -> tuple[np.ndarray, int]:
        """A request's tokens checked against the model: the int64 grid and its bandwidth id."""
        grid = codes_array(codes)
        return grid, resolve_bandwidth_id(served.bandwidths, served.codebooks, num_codebooks=grid.shape[0],
                                          frames=grid.shape[1], bandwidth_id=bandwidth_id, bandwidth=bandwidth)

    def _check_mel(self, served: ServedModel, mel: np.ndarray) -> str | None:
        if served.mel_front_end is None:
            return None
        check = check_mel(mel, served.mel_front_end)
        refuse_impossible(check, self.state.metrics, served.name)
        if check.warning is None:
            return None
        self.state.metrics.input_warning(served.name, check.cause or "other")
        return f"{check.cause}: {check.warning}"

    def _check_frames(self, served: ServedModel, frames: int) -> None:
        served.check_frames(frames)
        seconds, limit = served.seconds(frames), self.state.settings.max_audio_seconds
        if seconds > limit:
            raise PayloadTooLargeError(
                f"the requested audio would last {beyond(seconds, limit)} s; this server produces at most "
                f"{limit:g} s per request (VOCOS_MAX_AUDIO_SECONDS)"
            )

    @staticmethod
    def _resynthesis_bandwidth(served: ServedModel, bandwidth_id: int | None, bandwidth: float | None) -> int | None:
        if not served.bandwidths:
            if bandwidth_id is not None or bandwidth is not None:
                raise InvalidInputError(
                    f"bandwidth_id / bandwidth apply to EnCodec models only; drop them for model {served.name!r}"
                )
            return None
        return resolve_bandwidth_id(served.bandwidths, served.codebooks, bandwidth_id=bandwidth_id, bandwidth=bandwidth)


async def _encoded(audio: Audio, fmt: OutputFormat) -> bytes:
    """``audio``'s body in ``fmt``; a long one (or FLAC, slow at any length) off the event loop."""
    if audio.samples.size <= INLINE_AUDIO_SAMPLES and fmt is not OutputFormat.FLAC:
        return encode_audio(audio.samples, audio.sample_rate, fmt)
    return await asyncio.to_thread(encode_audio, audio.samples, audio.sample_rate, fmt)


async def _pushed(stream: AudioStream, pieces: AsyncGenerator[tuple[np.ndarray, bool], None],
                  deadline: float) -> AsyncIterator[np.ndarray]:
    """Push an input's ``(frames, last)`` pieces through ``stream``, yielding the audio as it comes (the
    stream ends with a piece marked last, else once the pieces end); the stream and ``pieces`` are closed
    however the iteration ends (a client that leaves stops the computation)."""
    outcome = "error"
    try:
        async with contextlib.aclosing(pieces):
            ended = False
            async for frames, last in pieces:
                yield await stream.push(frames, final=last, timeout=deadline - time.monotonic())
                ended = last
            if not ended:
                yield await stream.finish(timeout=deadline - time.monotonic())
        outcome = "ok"
    except (GeneratorExit, asyncio.CancelledError):  # the client left: its answer was closed or cancelled
        outcome = "disconnected"
        raise
    finally:
        stream.close(outcome)


def _answer_length(served: ServedModel, frames: int, rate: int) -> int:
    """Samples of the decode of ``frames`` frames at ``rate`` (the model's own rate keeps their number)."""
    return resampled_length(served.num_samples(frames), served.sample_rate, rate)


def _pushes(frames: np.ndarray) -> list[np.ndarray]:
    """Frames ``(C, T)`` cut into pushes of :data:`STREAMED_PUSH_FRAMES`, so the first audio leaves after
    one short step."""
    return [frames[..., start:start + STREAMED_PUSH_FRAMES] for start in range(0, frames.shape[-1],
                                                                                STREAMED_PUSH_FRAMES)]


async def _whole(grid: np.ndarray) -> AsyncGenerator[tuple[np.ndarray, bool], None]:
    """A whole input ``(C, T)``, a push at a time, the last marked."""
    pushes = _pushes(grid)
    for i, push in enumerate(pushes):
        yield push, i == len(pushes) - 1


async def _analysed(first: torch.Tensor, analysis: Analysis) -> AsyncGenerator[tuple[np.ndarray, bool], None]:
    """An upload's features ``(C, t)`` as its analysis makes them, a push at a time (the end unknown until
    it comes); the analysis is closed at the end."""
    try:
        piece: torch.Tensor | None = first
        while piece is not None:
            for push in _pushes(piece.cpu().numpy()):
                yield push, False
            piece = await anext(analysis, None)
    finally:
        analysis.close()


async def _fitted(chunks: AsyncIterator[np.ndarray], total: int) -> AsyncIterator[np.ndarray]:
    """``chunks`` cut, or padded with trailing zeros, to exactly ``total`` samples (the header's length)."""
    sent = 0
    async for chunk in chunks:
        piece = chunk[: max(0, total - sent)]
        sent += piece.size
        if piece.size:
            yield piece
    if sent < total:
        yield np.zeros(total - sent, dtype=np.float32)
