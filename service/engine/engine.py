"""Dynamic batching engine: one per loaded model, an asyncio queue in front of a single compute thread.

Requests ``submit`` their inputs and await a future; a loop task forms batches (``service.engine.batching``)
and runs the model's exact batched entry point in a dedicated worker thread, so the event loop keeps
answering health probes while a batch computes. It knows nothing of HTTP: failures are raised as
``EngineError`` subclasses that the app maps to status codes in one place (``service.errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch

from service.engine.batching import BatchPolicy, plan_batch

log = logging.getLogger(__name__)


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


class BatchModel(Protocol):
    """What the engine needs of a model: an exact batched call over inputs ``(C, T_i)``."""

    def decode_batch(
        self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
    ) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class BatchStats:
    """What happened in one model call, for metrics."""

    size: int
    real_frames: int
    padded_frames: int
    compute_s: float
    ok: bool


class EngineObserver(Protocol):
    """Receives the engine's measurements (``service.runtime.metrics`` implements it)."""

    def on_queue_depth(self, model: str, depth: int) -> None: ...

    def on_queue_wait(self, model: str, seconds: float) -> None: ...

    def on_batch(self, model: str, stats: BatchStats) -> None: ...


@dataclass(eq=False)
class _Item:
    inputs: torch.Tensor
    bandwidth_id: int | None
    request_id: str
    enqueued: float
    future: asyncio.Future[torch.Tensor] = field(repr=False)

    @property
    def frames(self) -> int:
        return int(self.inputs.shape[-1])


# Outcome of one item of a model call: its output, or the exception that belongs to it alone.
_Outcome = torch.Tensor | BaseException

_EWMA_ALPHA = 0.2


class BatchingEngine:
    """Batches concurrent ``submit`` calls for one model under a ``BatchPolicy``."""

    def __init__(
        self, name: str, model: BatchModel, policy: BatchPolicy, observer: EngineObserver | None = None
    ) -> None:
        self.name = name
        self.model = model
        self.policy = policy
        self._observer = observer
        self._pending: list[_Item] = []
        self._in_flight = 0
        self._accepting = False
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight_frames = 0
        self._frame_seconds = 1e-4  # EWMA of a model call's seconds per frame; seeds Retry-After until measured

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        assert self._task is None, "engine started twice"
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vocos-{self.name}")
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name=f"batching-{self.name}")

    def stop_accepting(self) -> None:
        """Refuse new requests from now on; queued and running ones still complete."""
        self._accepting = False
        if self._loop is not None and self._wakeup is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, let queued and running requests finish for up to ``timeout`` s, then stop.

        Returns whether everything finished; requests still waiting after the timeout fail with
        ``EngineStoppedError``.
        """
        self.stop_accepting()
        finished = True
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                finished = False
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(
                    EngineStoppedError(f"{self.name} engine stopped before this request ran")
                )
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        return finished

    @property
    def alive(self) -> bool:
        """Whether the batching loop runs (it ends only after a drain)."""
        return self._task is not None and not self._task.done()

    @property
    def accepting(self) -> bool:
        return self._accepting and self.alive

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def retry_after(self) -> float:
        """Seconds until the queue has likely moved: the frames queued and computing at the measured
        seconds per frame. Work, not request counts: one long request costs what many short ones do."""
        frames = sum(item.frames for item in self._pending) + self._in_flight_frames
        return max(1.0, math.ceil(frames * self._frame_seconds))

    # -- requests --------------------------------------------------------------------------------

    async def submit(
        self,
        inputs: torch.Tensor,
        *,
        bandwidth_id: int | None = None,
        timeout: float | None = None,
        request_id: str = "",
    ) -> torch.Tensor:
        """Queue ``inputs`` ``(C, T)`` and return the model's output for it.

        ``timeout`` (seconds) bounds the wait; when it passes the request leaves the queue and
        ``DeadlineExceededError`` is raised. Cancelling the caller also removes the request from the
        queue, so a request whose client went away is never computed.
        """
        if not self.accepting:
            raise EngineStoppedError(f"the {self.name} model is not accepting requests (draining or stopped)")
        if len(self._pending) >= self.policy.max_queue_size:
            raise QueueFullError(
                f"the {self.name} queue is full ({self.policy.max_queue_size} waiting requests)",
                self.retry_after(),
            )
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError("the request deadline passed before it was queued")
        assert self._loop is not None and self._wakeup is not None
        item = _Item(inputs, bandwidth_id, request_id, time.monotonic(), self._loop.create_future())
        self._pending.append(item)
        self._report_depth()
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except asyncio.TimeoutError:
            waited = time.monotonic() - item.enqueued
            raise DeadlineExceededError(
                f"the request's deadline passed after {waited:.3g} s waiting for the model"
            ) from None
        finally:
            self._discard(item)

    def _discard(self, item: _Item) -> None:
        if not item.future.done():
            item.future.cancel()  # a running batch then drops its output
        if item in self._pending:
            self._pending.remove(item)
            self._report_depth()

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.on_queue_depth(self.name, len(self._pending))

    # -- batching loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while await self._batch_ready():
            batch = self._take_batch()
            if batch:
                await self._execute(batch)

    async def _batch_ready(self) -> bool:
        """Wait until a batch should run now; False once stopped with nothing left to run."""
        assert self._wakeup is not None
        while True:
            if not self._pending:
                if not self._accepting:
                    return False
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            plan = plan_batch([item.frames for item in self._pending], self.policy)
            remaining = self.policy.max_wait_s - (time.monotonic() - self._pending[0].enqueued)
            if plan.full or remaining <= 0 or not self._accepting:
                return True
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take_batch(self) -> list[_Item]:
        plan = plan_batch([item.frames for item in self._pending], self.policy)
        batch = [self._pending[i] for i in plan.indices]
        taken = set(plan.indices)
        self._pending = [item for i, item in enumerate(self._pending) if i not in taken]
        self._report_depth()
        return [item for item in batch if not item.future.done()]

    async def _execute(self, batch: list[_Item]) -> None:
        assert self._loop is not None and self._executor is not None
        start = time.monotonic()
        if self._observer is not None:
            for item in batch:
                self._observer.on_queue_wait(self.name, start - item.enqueued)
        inputs = [item.inputs for item in batch]
        ids = [item.bandwidth_id for item in batch]
        bandwidth_ids = None if all(i is None for i in ids) else [int(i or 0) for i in ids]
        self._in_flight = len(batch)
        self._in_flight_frames = sum(item.frames for item in batch)
        ok = True
        try:
            outcomes = await self._loop.run_in_executor(self._executor, self._compute, inputs, bandwidth_ids)
        except Exception as exc:
            ok = False
            ids_text = ", ".join(item.request_id for item in batch if item.request_id) or "-"
            log.exception("%s batch of %d failed (requests %s)", self.name, len(batch), ids_text)
            failure = BatchFailedError(f"the {self.name} model failed on this request's batch: {exc}")
            outcomes = [failure] * len(batch)
        except asyncio.CancelledError:  # a drain ran out of time: nobody will collect this batch
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(EngineStoppedError(f"the {self.name} engine stopped mid-batch"))
            raise
        finally:
            self._in_flight = 0
            frames, self._in_flight_frames = self._in_flight_frames, 0
        elapsed = time.monotonic() - start
        self._frame_seconds += _EWMA_ALPHA * (elapsed / max(1, frames) - self._frame_seconds)
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue  # its caller left (deadline or disconnect) while it ran
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
        self._report_batch(batch, elapsed, ok)

    def _report_batch(self, batch: list[_Item], elapsed: float, ok: bool) -> None:
        if self._observer is None:
            return
        frames = [item.frames for item in batch]
        stats = BatchStats(len(batch), sum(frames), len(batch) * max(frames), elapsed, ok)
        self._observer.on_batch(self.name, stats)

    def _compute(self, inputs: list[torch.Tensor], bandwidth_ids: list[int] | None) -> list[_Outcome]:
        """Run in the worker thread: the batched call, or item by item to pin a ValueError on its owner.

        When the device runs out of memory the batch is retried as two halves, down to single requests;
        a request that does not fit alone fails with ``DeviceOutOfMemoryError`` and the rest still run.
        """
        try:
            outputs = self.model.decode_batch(inputs, bandwidth_ids)
        except ValueError as exc:
            if len(inputs) == 1:
                return [InvalidItemError(str(exc))]
            return [self._compute([x], _pick(bandwidth_ids, i, i + 1))[0] for i, x in enumerate(inputs)]
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            outputs = None  # retried below, after the exception and its frames' tensors are released
        if outputs is None:
            return self._retry_in_halves(inputs, bandwidth_ids)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"decode_batch returned {len(outputs)} outputs for {len(inputs)} inputs")
        return list(outputs)

    def _retry_in_halves(self, inputs: list[torch.Tensor], bandwidth_ids: list[int] | None) -> list[_Outcome]:
        release_cached_device_memory()
        frames = [int(x.shape[-1]) for x in inputs]
        if len(inputs) == 1:
            log.warning("%s: out of device memory for a single request of %d frames", self.name, frames[0])
            return [
                DeviceOutOfMemoryError(
                    f"the {self.name} model ran out of device memory for this request alone ({frames[0]} "
                    "frames); retry later or send it in shorter parts",
                    self.retry_after(),
                )
            ]
        half = len(inputs) // 2
        log.warning("%s: out of device memory for a batch of %s frames; retrying it in two halves", self.name, frames)
        return self._compute(inputs[:half], _pick(bandwidth_ids, 0, half)) + self._compute(
            inputs[half:], _pick(bandwidth_ids, half, len(inputs))
        )


def _pick(bandwidth_ids: list[int] | None, start: int, stop: int) -> list[int] | None:
    return None if bandwidth_ids is None else bandwidth_ids[start:stop]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (the caching allocator's error, or the
    RuntimeError that cuBLAS/cuDNN workspace allocations raise)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def release_cached_device_memory() -> None:
    """Return the CUDA caching allocator's free blocks, so a retry can use them in another shape."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
