"""A serial worker thread with a bounded wait list, for per-request model work that cannot be batched.

The audio-in path (``audio_to_features``: STFT or the EnCodec encoder) runs once per upload; running
it in the model thread (``service.engine.torch_thread``) keeps it off the event loop, and the wait
list bounds how much of it can pile up, like the batching queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from service.engine.engine import DeadlineExceededError, EngineStoppedError, QueueFullError
from service.engine.torch_thread import torch_thread

T = TypeVar("T")


class SerialWorker:
    """Runs blocking calls in the model thread, one at a time; at most ``max_waiting`` may wait."""

    def __init__(self, name: str, max_waiting: int) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self._calls: set[asyncio.Future[Any]] = set()
        self._waiting = 0
        self._mean_seconds = 0.05
        self._closed = False

    @property
    def waiting(self) -> int:
        return self._waiting

    async def run(self, fn: Callable[..., T], *args: object, timeout: float | None = None) -> T:
        """``fn(*args)`` in the model thread. A call still queued when the caller gives up never runs."""
        if self._closed:
            raise EngineStoppedError(f"the {self.name} worker is stopped")
        if self._waiting >= self.max_waiting:
            raise QueueFullError(
                f"the {self.name} queue is full ({self.max_waiting} waiting requests)",
                max(1.0, self._waiting * self._mean_seconds),
            )
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError("the request deadline passed before it was queued")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(torch_thread(), _timed, fn, args)
        self._calls.add(future)
        self._waiting += 1
        try:
            result, seconds = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError("the request's deadline passed while its audio was analysed") from None
        finally:
            self._waiting -= 1
            self._calls.discard(future)
        self._mean_seconds += 0.2 * (seconds - self._mean_seconds)
        return result

    def close(self) -> None:
        """Refuse new calls; calls not yet started are dropped."""
        self._closed = True
        for future in self._calls:
            future.cancel()


def _timed(fn: Callable[..., T], args: tuple[object, ...]) -> tuple[T, float]:
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start
