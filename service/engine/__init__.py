"""The batching layer: one ``BatchingEngine`` per served model (an asyncio queue in front of one compute
thread), the batch-forming policy, and the serial worker for per-request model work. It knows
nothing of HTTP; its failures are ``EngineError`` subclasses."""

from service.engine.batching import BatchPlan, BatchPolicy, plan_batch
from service.engine.compute import BatchModel, is_out_of_memory, release_cached_device_memory
from service.engine.engine import BatchingEngine
from service.engine.errors import (
    BatchFailedError,
    DeadlineExceededError,
    DeviceOutOfMemoryError,
    EngineError,
    EngineStoppedError,
    InvalidItemError,
    QueueFullError,
    StreamLimitError,
)
from service.engine.observer import BatchStats, EngineObserver
from service.engine.streams import EngineStream, OpenStreams, StreamPolicy, StreamStats
from service.engine.workers import SerialWorker

__all__ = [
    "BatchFailedError",
    "BatchModel",
    "BatchPlan",
    "BatchPolicy",
    "BatchStats",
    "BatchingEngine",
    "DeadlineExceededError",
    "DeviceOutOfMemoryError",
    "EngineError",
    "EngineObserver",
    "EngineStoppedError",
    "EngineStream",
    "InvalidItemError",
    "OpenStreams",
    "QueueFullError",
    "SerialWorker",
    "StreamLimitError",
    "StreamPolicy",
    "StreamStats",
    "is_out_of_memory",
    "plan_batch",
    "release_cached_device_memory",
]
