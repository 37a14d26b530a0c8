"""A worker with a bounded wait list, for per-request model work that cannot be batched.

The audio-in path (``ServedModel.analysis``: STFT or the EnCodec encoder) runs once per upload, in the
model thread (``service.engine.torch_thread``), off the event loop. It comes as
:data:`~vocos_core.steps.Steps` and runs a slice of them at a time, each at most ``slice_s`` long, so
that stream steps and batches queued meanwhile run between the slices (the EnCodec encoder takes
about 50 ms per second of audio on 2 cores, seconds for a long upload), and its pieces of output
come out as they are made, so a streamed answer can begin before the analysis ends. The wait list
bounds how much of it can pile up, like the batching queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from service.engine.engine import DeadlineExceededError, EngineStoppedError, QueueFullError
from service.engine.torch_thread import torch_thread
from vocos_core.steps import Steps, advance, join


class SerialWorker:
    """Runs :data:`Steps` in the model thread, ``slice_s`` of them at a time; at most ``max_waiting``
    calls may wait or run."""

    def __init__(self, name: str, max_waiting: int, slice_s: float | None = None) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self.slice_s = slice_s
        self._slices: set[asyncio.Future[Any]] = set()
        self._waiting = 0
        self._mean_seconds = 0.05
        self._closed = False

    @property
    def waiting(self) -> int:
        return self._waiting

    def start(self, make: Callable[..., Steps], *args: object, deadline: float | None = None) -> Analysis:
        """``make(*args)``'s steps, admitted now (or QueueFullError, EngineStoppedError,
        DeadlineExceededError): iterate the result for the pieces of output, and close it."""
        if self._closed:
            raise EngineStoppedError(f"the {self.name} worker is stopped")
        if self._waiting >= self.max_waiting:
            raise QueueFullError(
                f"the {self.name} queue is full ({self.max_waiting} waiting requests)",
                max(1.0, self._waiting * self._mean_seconds),
            )
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceededError("the request deadline passed before it was queued")
        self._waiting += 1
        return Analysis(self, make, args, deadline)

    async def run(self, make: Callable[..., Steps], *args: object, timeout: float | None = None) -> torch.Tensor:
        """The whole output of ``make(*args)``'s steps. A call whose caller gives up (its deadline, a
        cancellation) runs no further slice."""
        analysis = self.start(make, *args, deadline=None if timeout is None else time.monotonic() + timeout)
        try:
            return join([piece async for piece in analysis])
        finally:
            analysis.close()

    def close(self) -> None:
        """Refuse new calls; slices not yet started are dropped."""
        self._closed = True
        for future in self._slices:
            future.cancel()

    def _ended(self, seconds: float | None) -> None:
        self._waiting -= 1
        if seconds is not None:
            self._mean_seconds += 0.2 * (seconds - self._mean_seconds)


class Analysis:
    """One call's steps, made on its first slice (in the model thread, as every torch operation is);
    ``async for`` gives its pieces of output as the slices make them."""

    def __init__(self, worker: SerialWorker, make: Callable[..., Steps], args: tuple[object, ...],
                 deadline: float | None) -> None:
        self.worker, self.make, self.args, self.deadline = worker, make, args, deadline
        self.steps: Steps | None = None
        self.done = False
        self.seconds = 0.0
        self._pieces: deque[torch.Tensor] = deque()
        self._closed = False

    def __aiter__(self) -> Analysis:
        return self

    async def __anext__(self) -> torch.Tensor:
        while not self._pieces:
            if self.done:
                raise StopAsyncIteration
            await self._slice()
        return self._pieces.popleft()

    def close(self) -> None:
        """Leave the wait list; no further slice runs."""
        if not self._closed:
            self._closed = True
            self.worker._ended(self.seconds if self.done else None)

    async def _slice(self) -> None:
        worker = self.worker
        if worker._closed or self._closed:
            raise EngineStoppedError(f"the {worker.name} worker is stopped")
        timeout = None if self.deadline is None else self.deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError("the request's deadline passed while its audio was analysed")
        future = asyncio.get_running_loop().run_in_executor(torch_thread(), self._run_slice)
        worker._slices.add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError("the request's deadline passed while its audio was analysed") from None
        finally:
            worker._slices.discard(future)

    def _run_slice(self) -> None:
        start = time.monotonic()
        try:
            with torch.inference_mode():
                if self.steps is None:
                    self.steps = self.make(*self.args)
                self.done, pieces = advance(self.steps, self.worker.slice_s)
            self._pieces.extend(pieces)
        finally:
            self.seconds += time.monotonic() - start
