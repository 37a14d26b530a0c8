"""What the engine measures, and the interface that receives it (``service.runtime.metrics`` implements it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.engine.streams import StreamStats


@dataclass(frozen=True)
class BatchStats:
    """What happened in one whole-utterance model call, for metrics."""

    size: int
    real_frames: int
    padded_frames: int
    compute_s: float
    ok: bool


class EngineObserver(Protocol):
    """Receives the engine's measurements."""

    def on_queue_depth(self, model: str, depth: int) -> None: ...

    def on_queue_wait(self, model: str, seconds: float) -> None: ...

    def on_batch(self, model: str, stats: BatchStats) -> None: ...

    def on_stream_batch(self, model: str, stats: StreamStats) -> None: ...
