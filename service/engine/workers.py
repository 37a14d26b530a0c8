"""A worker with a bounded wait list, for per-request model work that cannot be batched.

The audio-in path (``ServedModel.analysis``: STFT or the EnCodec encoder) runs once per upload, in the
model thread (``service.engine.torch_thread``), off the event loop. It comes as
:data:`~vocos_core.steps.Steps` and runs a slice of them at a time, each at most ``slice_s`` long, so
that stream steps and batches queued meanwhile run between the slices: the EnCodec encoder takes
about 50 ms per second of audio on 2 cores, seconds for a long upload. The wait list bounds how
much of it can pile up, like the batching queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from service.engine.engine import DeadlineExceededError, EngineStoppedError, QueueFullError
from service.engine.torch_thread import torch_thread
from vocos_core.steps import Steps, advance

T = TypeVar("T")


class SerialWorker:
    """Runs :data:`Steps` in the model thread, ``slice_s`` of them at a time; at most ``max_waiting``
    calls may wait or run."""

    def __init__(self, name: str, max_waiting: int, slice_s: float | None = None) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self.slice_s = slice_s
        self._calls: set[asyncio.Future[Any]] = set()
        self._waiting = 0
        self._mean_seconds = 0.05
        self._closed = False

    @property
    def waiting(self) -> int:
        return self._waiting

    async def run(self, make: Callable[..., Steps[T]], *args: object, timeout: float | None = None) -> T:
        """The result of ``make(*args)``'s steps, made and run in the model thread a slice at a time.

        A call whose caller gives up (its deadline, a cancellation) runs no further slice.
        """
        self._admit(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        work = _Work(make, args, self.slice_s)
        self._waiting += 1
        try:
            while not work.done:
                await self._slice(work, None if deadline is None else deadline - time.monotonic())
        finally:
            self._waiting -= 1
        self._mean_seconds += 0.2 * (work.seconds - self._mean_seconds)
        return work.result

    def close(self) -> None:
        """Refuse new calls; slices not yet started are dropped."""
        self._closed = True
        for future in self._calls:
            future.cancel()

    def _admit(self, timeout: float | None) -> None:
        if self._closed:
            raise EngineStoppedError(f"the {self.name} worker is stopped")
        if self._waiting >= self.max_waiting:
            raise QueueFullError(
                f"the {self.name} queue is full ({self.max_waiting} waiting requests)",
                max(1.0, self._waiting * self._mean_seconds),
            )
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError("the request deadline passed before it was queued")

    async def _slice(self, work: _Work, timeout: float | None) -> None:
        if self._closed:
            raise EngineStoppedError(f"the {self.name} worker is stopped")
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError("the request's deadline passed while its audio was analysed")
        future = asyncio.get_running_loop().run_in_executor(torch_thread(), work.run_slice)
        self._calls.add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError("the request's deadline passed while its audio was analysed") from None
        finally:
            self._calls.discard(future)


class _Work:
    """One call's steps, made on its first slice (in the model thread, as every torch operation is)."""

    def __init__(self, make: Callable[..., Steps[Any]], args: tuple[object, ...], slice_s: float | None) -> None:
        self.make, self.args, self.slice_s = make, args, slice_s
        self.steps: Steps[Any] | None = None
        self.done = False
        self.result: Any = None
        self.seconds = 0.0

    def run_slice(self) -> None:
        start = time.monotonic()
        try:
            with torch.inference_mode():
                if self.steps is None:
                    self.steps = self.make(*self.args)
                self.done, self.result = advance(self.steps, self.slice_s)
        finally:
            self.seconds += time.monotonic() - start
