"""One served model and what runs it: the loaded model, its batching engine, its audio-analysis worker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.engine import BatchingEngine, BatchPolicy, EngineObserver, OpenStreams, SerialWorker, StreamPolicy
from service.runtime.models import ServedModel

if TYPE_CHECKING:
    from service.runtime.registry import ModelSpec
    from service.settings import Settings


def stream_policy(settings: Settings) -> StreamPolicy:
    """The limits of every engine's streams, from the service settings."""
    return StreamPolicy(
        max_streams=settings.max_streams,
        max_wait_s=settings.stream_max_wait_ms / 1000.0,
        max_step_wait_s=settings.stream_max_step_wait_ms / 1000.0,
    )


def batch_policy(batching: Mapping[str, float]) -> BatchPolicy:
    """The batching policy of a model's engine from its batching options (``ModelSpec.batching``)."""
    return BatchPolicy(
        max_batch_size=int(batching["max_batch_size"]),
        max_wait_s=batching["max_wait_ms"] / 1000.0,
        max_batch_frames=int(batching["max_batch_frames"]),
        bucket_ratio=batching["bucket_ratio"],
        max_queue_size=int(batching["max_queue_size"]),
    )


@dataclass(eq=False)
class ModelSlot:
    """What a request for one model name uses; built from the model's spec (``service.runtime.registry``)."""

    served: ServedModel
    engine: BatchingEngine
    features: SerialWorker

    @property
    def name(self) -> str:
        return self.served.name

    @classmethod
    async def start(cls, served: ServedModel, spec: ModelSpec, observer: EngineObserver | None,
                    streams: StreamPolicy | None = None, open_streams: OpenStreams | None = None) -> ModelSlot:
        """The slot of ``served`` with the batching options of ``spec``, its engine started; ``open_streams``
        shared by the engines of one model thread (every engine of a process)."""
        policy = batch_policy(spec.batching)
        engine = BatchingEngine(served.name, served, policy, observer=observer, stream_policy=streams,
                                open_streams=open_streams)
        await engine.start()
        # The audio analysis keeps its slices as short as the engines keep their calls while streams are open.
        slice_s = (streams or StreamPolicy()).max_step_wait_s
        return cls(served, engine, SerialWorker(f"{served.name}-features", policy.max_queue_size, slice_s))
