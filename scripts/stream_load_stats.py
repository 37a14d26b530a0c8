"""What scripts/stream_load.py measures of each stream, and how it sums them up (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StreamResult:
    """One stream's timeline (``time.perf_counter()`` seconds): when each chunk went out (with the frames
    sent so far) and when each audio message came in (with the samples received so far)."""

    sample_rate: int
    lookahead_samples: int  # audio held back until later frames arrive (the start message's lookahead)
    hop: int
    start: float = 0.0
    done: float = 0.0
    sends: list[tuple[float, int]] = field(default_factory=list)
    receives: list[tuple[float, int]] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return self.receives[-1][1] if self.receives else 0

    def receive(self, at: float, chunk: np.ndarray) -> None:
        self.receives.append((at, self.samples + chunk.size))
        self.chunks.append(chunk)

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    def final_after(self, frames: int) -> int:
        """Samples that are final once ``frames`` frames are in (``frames * hop - lookahead``, at least 0)."""
        return max(0, min(frames * self.hop - self.lookahead_samples, self.samples))

    def chunk_latencies(self) -> list[float]:
        """For each chunk that made new audio final: seconds from its send to that audio's arrival."""
        latencies: list[float] = []
        k, previous = 0, 0
        for sent_at, frames in self.sends:
            wanted = self.final_after(frames)
            if wanted <= previous:
                continue
            while k < len(self.receives) and self.receives[k][1] < wanted:
                k += 1
            if k == len(self.receives):
                break
            latencies.append(self.receives[k][0] - sent_at)
            previous = wanted
        return latencies

    def needed_buffer(self) -> float:
        """The jitter buffer (s) a player starting at the first audio needed never to run dry."""
        return needed(self.receives, self.sample_rate)


def needed(receives: list[tuple[float, int]], rate: int) -> float:
    """``max_k(t_k - t_first - samples_before_k / rate)`` for messages ``(t_k, samples so far)``: how long
    after the first audio a player must wait before it starts, so that every sample is in before it is due."""
    if not receives:
        return float("inf")
    first, need, before = receives[0][0], 0.0, 0
    for at, total in receives:
        need = max(need, at - first - before / rate)
        before = total
    return need


@dataclass(frozen=True)
class RealTimeSummary:
    """A real-time run: per-stream and per-chunk figures in milliseconds, underruns counted."""

    first_audio: list[float]
    chunk_latency: list[float]
    needed_buffer: list[float]
    underruns: int
    ideal_buffer_ms: float  # what a zero-latency server would need, for the same chunks
    send_lag_ms: float  # how late the simulated TTS sent a chunk at worst (the client's own overload)
    lookahead_ms: float
    max_error: float  # |stream - offline|, all streams


def ideal_buffer(result: StreamResult, fps: float) -> float:
    """The buffer a player would need if each chunk's audio arrived the instant the TTS had the chunk
    (when its last frame was due), the rest at the last chunk."""
    points = [(frames / fps, result.final_after(frames)) for _, frames in result.sends]
    points[-1] = (points[-1][0], result.samples)
    return needed([p for p in points if p[1] > 0], result.sample_rate)


def summarise(results: list[StreamResult], fps: float, buffer_ms: float, offline: np.ndarray) -> RealTimeSummary:
    needed = [1000 * r.needed_buffer() for r in results]
    lag = max((at - r.start - frames / fps for r in results for at, frames in r.sends), default=0.0)
    errors = [float(np.abs(r.audio() - offline).max()) if r.samples == offline.size else float("inf")
              for r in results]
    return RealTimeSummary(
        first_audio=[1000 * (r.receives[0][0] - r.start) for r in results if r.receives],
        chunk_latency=[1000 * x for r in results for x in r.chunk_latencies()],
        needed_buffer=needed,
        underruns=sum(n > buffer_ms for n in needed),
        ideal_buffer_ms=1000 * max(ideal_buffer(r, fps) for r in results),
        send_lag_ms=1000 * lag,
        lookahead_ms=1000 * results[0].lookahead_samples / results[0].sample_rate,
        max_error=max(errors),
    )


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max); NaN for no values."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99), float(max(values))
