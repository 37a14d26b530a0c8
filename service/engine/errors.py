"""The engine's own failures; ``service.http.errors`` maps each class to a status code."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the engine's own failures."""


class QueueFullError(EngineError):
    """Too many requests are waiting; ``retry_after`` (seconds) estimates when there will be room."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(EngineError):
    """The request's deadline passed before its audio was ready; it no longer holds a queue slot."""


class EngineStoppedError(EngineError):
    """The engine is draining or stopped and accepts no new requests."""


class InvalidItemError(EngineError):
    """The model rejected this request's input (it raised ``ValueError`` when run alone)."""


class DeviceOutOfMemoryError(EngineError):
    """The device ran out of memory even for this request alone; ``retry_after`` (seconds) as for a full queue."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BatchFailedError(EngineError):
    """The model call of this request's batch failed; every request of that batch gets this error."""


class StreamLimitError(EngineError):
    """As many streams as the engine allows are open; ``retry_after`` (seconds) as for a full queue."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
