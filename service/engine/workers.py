"""A serial worker thread with a bounded wait list, for per-request model work that cannot be batched.

The audio-in path (``audio_to_features``: STFT or the EnCodec encoder) runs once per upload; running
it here keeps it off the event loop and bounds how much of it can pile up, like the batching queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service.engine.engine import DeadlineExceededError, EngineStoppedError, QueueFullError

T = TypeVar("T")


class SerialWorker:
    """Runs blocking calls one at a time in a dedicated thread; at most ``max_waiting`` may wait."""

    def __init__(self, name: str, max_waiting: int) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vocos-{name}")
        self._waiting = 0
        self._mean_seconds = 0.05
        self._closed = False

    @property
    def waiting(self) -> int:
        return self._waiting

    async def run(self, fn: Callable[..., T], *args: object, timeout: float | None = None) -> T:
        """``fn(*args)`` in the worker thread. A call still queued when the caller gives up never runs."""
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
        self._waiting += 1
        try:
            future = loop.run_in_executor(self._executor, _timed, fn, args)
            result, seconds = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError("the request's deadline passed while its audio was analysed") from None
        finally:
            self._waiting -= 1
        self._mean_seconds += 0.2 * (seconds - self._mean_seconds)
        return result

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def _timed(fn: Callable[..., T], args: tuple[object, ...]) -> tuple[T, float]:
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start
