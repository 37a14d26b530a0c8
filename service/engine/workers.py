"""A worker with a bounded wait list, for per-request model work that cannot be batched.

The audio-in path (``ServedModel.analysis``: STFT or the EnCodec encoder) runs once per upload, in the
model thread (``service.engine.torch_thread``), off the event loop. Analyses run one at a time, in
the order they came (so under load the first ones still meet their deadlines), each as
:data:`~vocos_core.steps.Steps` a slice at a time, at most ``slice_s`` long, so that stream steps and
batches queued meanwhile run between the slices (the EnCodec encoder takes about 50 ms per second of
audio on 2 cores, seconds for a long upload). Its pieces of output are handed over as they are made,
so a streamed answer can begin before the analysis ends, and it runs on whether or not they are read
yet. The wait list bounds how many analyses wait or run, like the batching queue.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from service.engine.compute import is_out_of_memory, release_cached_device_memory
from service.engine.engine import EWMA_ALPHA, DeadlineExceededError, EngineStoppedError, QueueFullError
from service.engine.errors import DeviceOutOfMemoryError
from service.engine.torch_thread import torch_thread
from vocos_core.steps import Steps, advance, join

# The weight a measured call keeps at each later one: as fast as the engine's moving averages forget.
_DECAY = 1 - EWMA_ALPHA


class SerialWorker:
    """Runs :data:`Steps` in the model thread, one call after another, ``slice_s`` of them at a time; at
    most ``max_waiting`` calls may wait or run."""

    def __init__(self, name: str, max_waiting: int, slice_s: float | None = None) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self.slice_s = slice_s
        self._turn = asyncio.Lock()  # its waiters are woken in the order they came
        self._slices: set[asyncio.Future[Any]] = set()
        self._waiting = 0
        self._admitted_size = 0.0  # the sizes of the calls admitted and not yet ended
        # Seconds and sizes of the calls that ran to their end, each older call's weighed down by _DECAY:
        # their ratio weighs a call by its size, so that a short call's fixed costs do not dominate.
        self._measured_seconds = 0.0
        self._measured_size = 0.0
        self._running_spent = 0.0  # compute seconds of the call running now, so far
        self._closed = False

    @property
    def waiting(self) -> int:
        """Calls admitted whose computation has not ended."""
        return self._waiting

    def start(self, make: Callable[..., Steps], *args: object, size: float = 1.0,
              deadline: float | None = None) -> Analysis:
        """``make(*args)``'s steps, admitted now (or QueueFullError, EngineStoppedError,
        DeadlineExceededError) and computed in their turn: iterate the result for the pieces of output,
        and close it. ``size``: the call's work in any unit its cost follows (the audio's samples)."""
        if self._closed:
            raise EngineStoppedError(f"the {self.name} worker is stopped")
        if self._waiting >= self.max_waiting:
            raise QueueFullError(f"the {self.name} queue is full ({self.max_waiting} waiting requests)",
                                 self.retry_after())
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceededError("the request deadline passed before it was queued")
        return Analysis(self, make, args, size, deadline)

    def retry_after(self) -> float:
        """Seconds until the wait list has likely moved: the admitted calls' sizes at the measured seconds per
        unit of size (as the batching queue's frames). Work, not counts: one long upload costs what many short
        ones do. The running call's seconds so far are taken off: the estimate counts down as it computes."""
        return max(1.0, math.ceil(self._admitted_size * self.seconds_per_size - self._running_spent))

    @property
    def seconds_per_size(self) -> float:
        """The measured seconds per unit of size (0 before any call ended)."""
        return self._measured_seconds / self._measured_size if self._measured_size > 0 else 0.0

    async def run(self, make: Callable[..., Steps], *args: object, size: float = 1.0,
                  timeout: float | None = None) -> torch.Tensor:
        """The whole output of ``make(*args)``'s steps. A call whose caller gives up (its deadline, a
        cancellation) runs no further slice."""
        analysis = self.start(make, *args, size=size,
                              deadline=None if timeout is None else time.monotonic() + timeout)
        try:
            return join([piece async for piece in analysis])
        finally:
            analysis.close()

    def close(self) -> None:
        """Refuse new calls; slices not yet started are dropped."""
        self._closed = True
        for future in self._slices:
            future.cancel()


class Analysis:
    """One call's steps, computed by a task of their own: made on the first slice (in the model thread,
    as every torch operation is), one slice after another until done. ``async for`` gives the pieces of
    output as the slices make them; :meth:`close` stops the computation."""

    def __init__(self, worker: SerialWorker, make: Callable[..., Steps], args: tuple[object, ...], size: float,
                 deadline: float | None) -> None:
        self.worker, self.size, self.deadline = worker, size, deadline
        self._make = lambda: make(*args)
        self._steps: Steps | None = None
        self._out: asyncio.Queue[torch.Tensor | BaseException | None] = asyncio.Queue()  # None: the end
        self._ended = False
        self._closed = False
        worker._waiting += 1
        worker._admitted_size += size
        self._task = asyncio.ensure_future(self._compute())
        self._task.add_done_callback(self._finished)

    def __aiter__(self) -> Analysis:
        return self

    async def __anext__(self) -> torch.Tensor:
        if self._ended:
            raise StopAsyncIteration
        item = await self._out.get()
        if item is None or isinstance(item, BaseException):
            self._ended = True
            if item is None:
                raise StopAsyncIteration
            raise item
        return item

    def close(self) -> None:
        """Stop the computation, if it still runs (after the slice that is running, if one is)."""
        # The flag as well: before Python 3.12, wait_for drops a cancellation that arrives just as
        # the slice it waits on is done, and the next slices would run.
        self._closed = True
        self._task.cancel()

    async def _compute(self) -> None:
        worker, seconds = self.worker, 0.0
        await asyncio.wait_for(worker._turn.acquire(), self._left())
        try:
            done = False
            while not done:
                if self._closed:
                    raise asyncio.CancelledError
                done, pieces, spent = await self._slice()
                seconds += spent
                worker._running_spent = seconds
                for piece in pieces:
                    self._out.put_nowait(piece)
        finally:
            worker._turn.release()
            worker._running_spent = 0.0
        worker._measured_seconds = _DECAY * worker._measured_seconds + seconds
        worker._measured_size = _DECAY * worker._measured_size + self.size

    def _finished(self, task: asyncio.Future[None]) -> None:
        """The end of the pieces, for the reader: however the task ended, even before it started."""
        self.worker._waiting -= 1
        self.worker._admitted_size -= self.size
        if task.cancelled():  # closed (no one reads on), or a slice dropped by the worker's close
            self._out.put_nowait(EngineStoppedError(f"the {self.worker.name} worker is stopped"))
        elif isinstance(task.exception(), asyncio.TimeoutError):
            self._out.put_nowait(DeadlineExceededError("the request's deadline passed while its audio was analysed"))
        else:
            self._out.put_nowait(task.exception())  # None: the end

    def _left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    async def _slice(self) -> tuple[bool, list[torch.Tensor], float]:
        worker = self.worker
        if worker._closed:
            raise EngineStoppedError(f"the {worker.name} worker is stopped")
        left = self._left()
        if left is not None and left <= 0:
            raise TimeoutError
        future = asyncio.get_running_loop().run_in_executor(torch_thread(), self._run_slice)
        worker._slices.add(future)
        try:
            return await asyncio.wait_for(future, left)
        finally:
            worker._slices.discard(future)

    def _run_slice(self) -> tuple[bool, list[torch.Tensor], float]:
        start = time.monotonic()
        try:
            with torch.inference_mode():
                if self._steps is None:
                    self._steps = self._make()
                done, pieces = advance(self._steps, self.worker.slice_s)
            return done, pieces, time.monotonic() - start
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
        # Out of device memory (a long upload through the EnCodec encoder on a GPU): a 503 with Retry-After, as
        # a whole request's, not a 500; the steps ended with the error, so their tensors are released by now.
        self._steps = None
        release_cached_device_memory()
        raise DeviceOutOfMemoryError(f"the {self.worker.name} worker ran out of device memory analysing this "
                                     "upload; retry later or send a shorter one", self.worker.retry_after())
