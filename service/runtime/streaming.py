"""Streams without a transport: chunks of mel frames or EnCodec tokens in, audio chunks out (:class:`AudioStream`).

The WebSocket routes and ``?stream=true`` responses (``service.http``) both drive one of these. It
checks each chunk against the model (``vocos_core.requests``), applies the per-stream limits, pushes
the chunk through the model's engine (``service.engine.streams``), resamples the audio as a stream
when another rate is asked for, and records the stream metrics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import soxr
import torch

from service.engine import EngineStream
from service.errors import InvalidInputError, PayloadTooLargeError, beyond
from service.runtime.metrics import ServiceMetrics
from service.runtime.slot import ModelSlot
from vocos_core.mel_check import MelCheck
from vocos_core.mel_stream_check import StreamMelCheck
from vocos_core.requests import codes_array, mel_array, resolve_bandwidth_id
from vocos_core.streaming import check_lookahead_frames, lookahead

# What a stream's chunks hold: mel frames, EnCodec tokens, or a model's own features (resynthesis).
StreamInputs = Literal["mel", "codes", "features"]
# The underrun metric's listener waits, after the first audio, for the stream's longest chunk so far (which even
# a server with no latency makes it wait for: the audio of a chunk comes when the chunk is in) plus this margin
# for the server's own jitter, as scripts/stream_load.py's player does. Without the wait, every stream fed at
# real time in chunks counted an underrun: its first audio is a chunk short by the lookahead.
UNDERRUN_MARGIN_S = 0.1


def refuse_impossible(check: MelCheck, metrics: ServiceMetrics, model: str) -> None:
    """InvalidInputError for a mel the model's front-end cannot produce (a request's or a stream's so far),
    counted as an input warning of its cause."""
    if check.impossible:
        metrics.input_warning(model, check.cause or "impossible")
        raise InvalidInputError(check.impossible)


@dataclass(frozen=True)
class StreamLimits:
    """Per-stream limits: audio seconds it may produce, wall seconds it may stay open."""

    max_audio_seconds: float
    max_duration_s: float


def check_stream_seconds(seconds: float, limit: float) -> None:
    """Refuse a stream whose audio would last ``seconds``, beyond ``limit`` (VOCOS_MAX_STREAM_AUDIO_SECONDS)."""
    if seconds > limit:
        raise PayloadTooLargeError(
            f"the stream's audio would last {beyond(seconds, limit)} s; a stream produces at most {limit:g} s "
            "(VOCOS_MAX_STREAM_AUDIO_SECONDS)"
        )


@dataclass
class _Timing:
    """What the stream metrics need: when audio first left, how much has left, time spent in the server."""

    opened: float = field(default_factory=time.monotonic)
    first_frames: float | None = None  # when the first chunk's frames arrived
    first_audio: float | None = None
    audio_seconds: float = 0.0
    server_seconds: float = 0.0
    behind: bool = False
    longest_chunk_s: float = 0.0  # the longest chunk so far, in seconds of audio


class AudioStream:
    """One stream of ``slot``'s model: ``push`` chunks ``(C, t)`` (mel) or ``(K, t)`` (tokens), then ``finish``;
    ``close`` always. Each returns float32 samples ``(S,)`` at ``sample_rate``, possibly none yet.
    ``lookahead``: the model's exact one, or a low-latency stream's (``lookahead_frames``)."""

    def __init__(self, slot: ModelSlot, metrics: ServiceMetrics, limits: StreamLimits, *, inputs: StreamInputs,
                 bandwidth_id: int | None, bandwidth: float | None, sample_rate: int | None,
                 request_id: str = "", transport: str = "websocket", lookahead_frames: int | None = None) -> None:
        served = slot.served
        if inputs == "codes" and not served.bandwidths:
            raise InvalidInputError(
                f"model {served.name!r} is a {served.kind} model; EnCodec tokens need an EnCodec model")
        if inputs == "mel" and served.bandwidths:
            raise InvalidInputError(f"model {served.name!r} is an EnCodec model; send tokens to /stream/encodec")
        codes = inputs == "codes"
        # A client's mel is held to the model's front-end as a request's is (a model's own features are not).
        self._mel_check = StreamMelCheck(served.mel_front_end) if inputs == "mel" and served.mel_front_end else None
        self.slot, self.metrics, self.limits = slot, metrics, limits
        self.codes, self.request_id, self.transport = codes, request_id, transport
        self.sample_rate = sample_rate or served.sample_rate
        self._bandwidth_id = None if bandwidth_id is None and bandwidth is None else resolve_bandwidth_id(
            served.bandwidths, served.codebooks, bandwidth_id=bandwidth_id, bandwidth=bandwidth)
        self._lookahead_frames = check_lookahead_frames(served.model, lookahead_frames)
        self.lookahead = lookahead(served.model, self._lookahead_frames)
        self._closed = False
        self._resampler = None if self.sample_rate == served.sample_rate else \
            soxr.ResampleStream(served.sample_rate, self.sample_rate, 1, dtype="float32", quality="HQ")
        self._frames = 0
        self._length: int | None = None  # samples at the model's rate the audio is fitted to (fit_length)
        self._model_samples = 0  # samples at the model's rate let out so far
        self._timing = _Timing()
        self.samples_out = 0
        # An EnCodec stream without a bandwidth takes its place now and begins at its first chunk, whose K gives it.
        self._stream: EngineStream = slot.engine.open_stream(self._bandwidth_id, request_id, self._lookahead_frames,
                                                             begin=not codes or self._bandwidth_id is not None)
        metrics.streams_active.labels(served.name).inc()
        if self._lookahead_frames is not None:
            metrics.streams_low_latency.labels(served.name).inc()

    @property
    def name(self) -> str:
        return self.slot.served.name

    async def push(self, array: np.ndarray, *, final: bool = False, timeout: float | None = None) -> np.ndarray:
        """A chunk of frames -> the audio it lets out (final, unless low-latency); ``final`` ends the stream with it."""
        return await self.push_many([self.check(array)], final=final, timeout=timeout)

    def fit_length(self, samples: int) -> None:
        """Cut or pad the audio to ``samples`` at the model's rate, before it is resampled: as a whole answer
        is (a resynthesis lasts as long as its input), so a streamed one equals it to the last sample."""
        self._length = samples

    def check(self, array: np.ndarray) -> torch.Tensor:
        """A chunk ``(C, t)`` checked against the model and the stream's limits, for :meth:`push_many`; raises
        on the first failure. A transport checks each chunk as it comes, so the chunks before a bad one are
        still answered (the stream then fails with the bad one's error)."""
        self.check_open_time(time.monotonic())
        chunk = self._chunk(array)
        if not self._stream.begun:
            self._begin(chunk)
        self._frames += int(chunk.shape[-1])
        served = self.slot.served
        self._timing.longest_chunk_s = max(self._timing.longest_chunk_s,
                                           int(chunk.shape[-1]) * served.model.hop_length / served.sample_rate)
        self._check_audio_length()
        return chunk

    async def push_many(self, chunks: Sequence[torch.Tensor], *, final: bool = False, timeout: float | None = None,
                        arrived: float | None = None) -> np.ndarray:
        """Checked chunks (:meth:`check`) that came in while the stream was busy, pushed as one (one model
        step for all of them); ``arrived``: when the first came (default: now), for the latency metrics."""
        now = time.monotonic()
        assert self._stream.begun and chunks, "push_many of no checked chunks"
        chunk = chunks[0] if len(chunks) == 1 else torch.cat(list(chunks), dim=-1)  # (C, t_1 + t_2 + ...)
        audio = (await self._stream.push(chunk, final=final, timeout=timeout)).numpy()
        return self._out(audio, now if arrived is None else arrived, final)

    async def finish(self, timeout: float | None = None) -> np.ndarray:
        """End the stream: its last samples."""
        arrived = time.monotonic()
        self.check_open_time(arrived)
        if self._frames == 0:
            raise InvalidInputError("the stream ended before any frames arrived; send at least one frame")
        self.slot.served.check_frames(self._frames)  # as few as a request that gives no audio: the same 422
        empty = torch.zeros(self.slot.served.n_features, 0)
        audio = (await self._stream.push(empty, final=True, timeout=timeout)).numpy()
        return self._out(audio, arrived, True)

    def close(self, outcome: str) -> None:
        """Release the stream (idempotent): ``outcome`` for the metrics ("ok", "error", "disconnected"...)."""
        if self._closed:
            return
        self._closed = True
        self._stream.close()
        labels = self.name
        self.metrics.streams_active.labels(labels).dec()
        if self._lookahead_frames is not None:
            self.metrics.streams_low_latency.labels(labels).dec()
        self.metrics.streams.labels(labels, self.transport, outcome).inc()
        if outcome == "ok" and self._timing.audio_seconds > 0:
            self.metrics.stream_rtf.labels(labels).observe(self._timing.server_seconds / self._timing.audio_seconds)

    # -- helpers -----------------------------------------------------------------------------------

    def _begin(self, first: torch.Tensor) -> None:
        served = self.slot.served
        self._bandwidth_id = resolve_bandwidth_id(served.bandwidths, served.codebooks,
                                                  num_codebooks=int(first.shape[0]), frames=int(first.shape[1]))
        self._stream.begin(self._bandwidth_id)

    def _chunk(self, array: np.ndarray) -> torch.Tensor:
        served = self.slot.served
        if not self.codes:
            mel = mel_array(array, served.n_features, first_frame=self._frames)  # errors name the stream's frame
            if self._mel_check is not None:
                refuse_impossible(self._mel_check.update(mel), self.metrics, self.name)
            return torch.from_numpy(mel)
        grid = codes_array(array)
        if self._bandwidth_id is not None:  # every chunk's K must be the stream's bandwidth's
            resolve_bandwidth_id(served.bandwidths, served.codebooks, bandwidth_id=self._bandwidth_id,
                                 num_codebooks=grid.shape[0], frames=grid.shape[1])
        return torch.from_numpy(grid)

    @property
    def open_until(self) -> float:
        """The ``time.monotonic()`` instant the stream's open time runs out (VOCOS_MAX_STREAM_DURATION_S)."""
        return self._timing.opened + self.limits.max_duration_s

    def check_open_time(self, now: float) -> None:
        """Raise :meth:`open_too_long` once the stream has been open longer than it may."""
        if now > self.open_until:
            raise self.open_too_long()

    def open_too_long(self) -> PayloadTooLargeError:
        """The 413 of a stream open beyond VOCOS_MAX_STREAM_DURATION_S (a transport's quiet client gets it too)."""
        return PayloadTooLargeError(
            f"the stream has been open over {self.limits.max_duration_s:g} s, the limit "
            "(VOCOS_MAX_STREAM_DURATION_S); open a new one"
        )

    def _check_audio_length(self) -> None:
        check_stream_seconds(self.slot.served.seconds(self._frames), self.limits.max_audio_seconds)

    def _out(self, audio: np.ndarray, arrived: float, final: bool) -> np.ndarray:
        if self._length is not None:
            audio = audio[:max(0, self._length - self._model_samples)]
            if final and self._model_samples + audio.size < self._length:
                audio = np.concatenate([audio, np.zeros(self._length - self._model_samples - audio.size, audio.dtype)])
        self._model_samples += audio.size
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio, last=final)
        self._observe(arrived, audio.size)
        self.samples_out += audio.size
        self.metrics.add_audio(self.name, audio.size / self.sample_rate)  # as made, for WebSocket streams too
        return np.ascontiguousarray(audio, dtype=np.float32)

    def _observe(self, arrived: float, samples: int) -> None:
        now, t, name = time.monotonic(), self._timing, self.name
        if t.first_frames is None:
            t.first_frames = arrived
        t.server_seconds += now - arrived
        if samples == 0:
            return
        self.metrics.stream_chunk_latency.labels(name).observe(now - arrived)
        if t.first_audio is None:
            t.first_audio = now
            self.metrics.stream_first_audio.labels(name).observe(now - t.first_frames)
        # A listener who started playing at the first audio, after a jitter buffer of the longest chunk so far
        # and UNDERRUN_MARGIN_S, has heard (now - first_audio - buffer) seconds: if that is more than was sent,
        # they ran out before this chunk came (one count per gap).
        heard = now - t.first_audio - t.longest_chunk_s - UNDERRUN_MARGIN_S
        behind = heard > t.audio_seconds + 1e-3
        if behind and not t.behind:
            self.metrics.stream_underruns.labels(name).inc()
        t.behind = behind
        t.audio_seconds += samples / self.sample_rate

