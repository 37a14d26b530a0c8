"""Dynamic batching engine: one per loaded model, an asyncio queue in front of a single compute thread.

Requests ``submit`` their inputs and await a future; a loop task forms batches (``service.engine.batching``)
and runs the model's exact batched entry point in the process's model thread
(``service.engine.torch_thread``), so the event loop keeps answering health probes while a batch
computes. It knows nothing of HTTP: failures are raised as ``EngineError`` subclasses that the app
maps to status codes in one place (``service.errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from service.engine.batching import BatchPolicy, plan_batch
from service.engine.compute import BatchModel, call_steps, compute_batch
from service.engine.errors import (
    BatchFailedError,
    DeadlineExceededError,
    DeviceOutOfMemoryError,
    EngineStoppedError,
    QueueFullError,
)
from service.engine.observer import BatchStats, EngineObserver
from service.engine.streams import EngineStream, OpenStreams, Step, StreamModel, StreamPolicy, StreamSlots, StreamStats
from service.engine.torch_thread import ThreadCallError, timed_in_torch_thread

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Item:
    inputs: torch.Tensor
    bandwidth_id: int | None
    request_id: str
    enqueued: float
    future: asyncio.Future[torch.Tensor] = field(repr=False)
    observed: bool = True  # reported to the observer (not the server's own warm-up calls)

    @property
    def frames(self) -> int:
        return int(self.inputs.shape[-1])


EWMA_ALPHA = 0.2


class BatchingEngine:
    """Batches concurrent ``submit`` calls for one model under a ``BatchPolicy``."""

    def __init__(
        self, name: str, model: BatchModel, policy: BatchPolicy, observer: EngineObserver | None = None,
        stream_policy: StreamPolicy | None = None, open_streams: OpenStreams | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.policy = policy
        self.stream_policy = stream_policy or StreamPolicy()
        self._streams = StreamSlots(name, self.stream_policy, open_streams)
        self._observer = observer
        self._pending: list[_Item] = []
        self._in_flight = 0
        self._accepting = False
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight_frames = 0
        self._chunked: dict[asyncio.Task[None], int] = {}  # long requests decoded in chunks, their frames
        self._frame_seconds = 1e-4  # EWMA of a model call's seconds per frame; seeds Retry-After until measured

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        assert self._task is None, "engine started twice"
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
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
            except TimeoutError:
                finished = False
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        stopped = EngineStoppedError(f"the {self.name} engine stopped (drain timeout) before this ran")
        for future in [item.future for item in self._pending] + [step.future for step in self._streams.steps]:
            if not future.done():
                future.set_exception(stopped)
        self._pending.clear()
        self._streams.steps.clear()
        for stream in list(self._streams.open):
            stream.close()
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
        return len(self._pending) + len(self._chunked)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def retry_after(self) -> float:
        """Seconds until the queue has likely moved: the frames queued and computing at the measured
        seconds per frame. Work, not request counts: one long request costs what many short ones do."""
        frames = sum(item.frames for item in self._pending) + sum(self._chunked.values()) + self._in_flight_frames
        return max(1.0, math.ceil(frames * self._frame_seconds))

    # -- requests --------------------------------------------------------------------------------

    async def submit(
        self,
        inputs: torch.Tensor,
        *,
        bandwidth_id: int | None = None,
        timeout: float | None = None,
        request_id: str = "",
        observed: bool = True,
    ) -> torch.Tensor:
        """Queue ``inputs`` ``(C, T)`` and return the model's output for it; ``observed=False`` keeps it out
        of the observer's measurements (a warm-up call, seconds long while kernels compile).

        ``timeout`` (seconds) bounds the wait; when it passes the request leaves the queue and
        ``DeadlineExceededError`` is raised. Cancelling the caller also removes the request from the
        queue, so a request whose client went away is never computed.
        """
        if not self.accepting:
            raise EngineStoppedError(f"the {self.name} model is not accepting requests (draining or stopped)")
        if self.queue_depth >= self.policy.max_queue_size:
            raise QueueFullError(
                f"the {self.name} queue is full ({self.policy.max_queue_size} waiting requests)",
                self.retry_after(),
            )
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError("the request deadline passed before it was queued")
        assert self._loop is not None and self._wakeup is not None
        item = _Item(inputs, bandwidth_id, request_id, time.monotonic(), self._loop.create_future(), observed)
        self._pending.append(item)
        self._report_depth()
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except TimeoutError:
            waited = time.monotonic() - item.enqueued
            raise DeadlineExceededError(
                f"the request's deadline passed after {waited:.3g} s waiting for the model"
            ) from None
        finally:
            self._discard(item)

    # -- streams ---------------------------------------------------------------------------------

    def open_stream(self, bandwidth_id: int | None = None, request_id: str = "",
                    lookahead_frames: int | None = None, *, begin: bool = True) -> EngineStream:
        """A new stream (``service.engine.streams``); ``close`` it when done, whatever happens.
        ``lookahead_frames``: a low-latency stream's (``vocos_core.streaming``), None for exact. ``begin=False``:
        the stream takes its place now (against ``max_streams``, and a drain waits for it) and starts its model
        state later, with :meth:`EngineStream.begin` (an EnCodec stream whose bandwidth follows from its first
        chunk), so its client is refused when it connects, as for any other stream."""
        if not self.accepting:
            raise EngineStoppedError(f"the {self.name} model is not accepting streams (draining or stopped)")
        self._streams.reserve(self.retry_after())
        stream = EngineStream(self, request_id, lookahead_frames)
        if begin:
            stream.begin(bandwidth_id)
        self._streams.add(stream)
        return stream

    def stream_state(self, bandwidth_id: int | None, lookahead_frames: int | None) -> Any:
        """A new stream's model state (``vocos_core.streaming``)."""
        return self._stream_model().start_stream(bandwidth_id, lookahead_frames)

    @property
    def open_streams(self) -> int:
        return len(self._streams.open)

    def release_stream(self, stream: EngineStream) -> None:
        """Forget ``stream``: its waiting step is dropped; wakes a drain waiting for streams to end."""
        self._streams.discard(stream)
        for step in self._streams.steps:
            if step.state is stream.state and not step.future.done():
                step.future.cancel()
        if self._wakeup is not None:
            self._wakeup.set()

    async def submit_step(self, stream: EngineStream, chunk: torch.Tensor, final: bool,
                          timeout: float | None, guess: bool = True) -> torch.Tensor:
        """Queue one step of ``stream`` and return its audio; the stream is closed if this fails."""
        assert self._loop is not None and self._wakeup is not None
        if not self.alive:
            raise EngineStoppedError(f"the {self.name} engine has stopped")
        if stream.closed:  # between the steps of a long push: its caller left, or its request was dropped
            raise EngineStoppedError("this stream has ended; open a new one")
        assert stream.begun, "a step of a stream that has not begun"
        step = Step(stream.state, chunk, final, time.monotonic(), self._loop.create_future(), guess)
        self._streams.steps.append(step)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(step.future), timeout)
        except TimeoutError:
            stream.close()
            raise DeadlineExceededError("the stream's deadline passed waiting for the model") from None
        except BaseException:
            stream.close()
            raise

    def _stream_model(self) -> StreamModel:
        assert hasattr(self.model, "decode_steps"), f"the {self.name} model cannot stream"
        return self.model  # type: ignore[return-value]

    async def _execute_steps(self, steps: list[Step]) -> None:
        self._in_flight, self._in_flight_frames = len(steps), sum(s.frames for s in steps)
        try:
            timed = await timed_in_torch_thread(
                call_steps, self.name, self._stream_model().decode_steps, self.retry_after,
                [s.state for s in steps], [s.chunk for s in steps], [s.final for s in steps], [s.guess for s in steps])
            outputs: list[torch.Tensor] | BaseException = timed.value
            compute_s = timed.seconds
        except ThreadCallError as failed:
            if isinstance(failed.error, DeviceOutOfMemoryError):  # logged as a warning in the model thread
                outputs = failed.error
            else:
                log.error("%s stream step of %d streams failed", self.name, len(steps), exc_info=failed.error)
                outputs = BatchFailedError(f"the {self.name} model failed on this stream's step: {failed.error}")
            compute_s = failed.seconds
        except asyncio.CancelledError:  # a drain ran out of time
            for s in steps:
                if not s.future.done():
                    s.future.set_exception(EngineStoppedError(f"the {self.name} engine stopped mid-step"))
            raise
        finally:
            self._in_flight, self._in_flight_frames = 0, 0
            self._streams.last_call_end = time.monotonic()
        for i, s in enumerate(steps):
            if not s.future.done():
                if isinstance(outputs, BaseException):
                    s.future.set_exception(outputs)
                else:
                    s.future.set_result(outputs[i])
        if self._observer is not None and hasattr(self._observer, "on_stream_batch"):
            stats = StreamStats(len(steps), sum(s.frames for s in steps), compute_s)
            self._observer.on_stream_batch(self.name, stats)

    async def _decode_in_chunks(self, item: _Item, chunk_frames: int) -> None:
        """A whole-utterance request run as an internal stream (not counted against ``max_streams``), in
        steps of ``chunk_frames``."""
        stream = EngineStream(self, item.request_id)
        stream.begin(item.bandwidth_id)
        item.future.add_done_callback(lambda _: stream.close())  # its caller left: stop computing it
        if self._observer is not None:
            self._observer.on_queue_wait(self.name, time.monotonic() - item.enqueued)
        try:
            audio = await stream.push(item.inputs, final=True, step_frames=chunk_frames)
            if not item.future.done():
                item.future.set_result(audio)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
        finally:
            self._chunked.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._report_depth()

    def _discard(self, item: _Item) -> None:
        if not item.future.done():
            item.future.cancel()  # a running batch then drops its output
        if item in self._pending:
            self._pending.remove(item)
            self._report_depth()

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.on_queue_depth(self.name, self.queue_depth)

    # -- batching loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while await self._batch_ready():
            if self._streams.ready(time.monotonic()) is not None:
                steps = self._streams.take()
                if steps:
                    await self._execute_steps(steps)
                continue
            batch = self._take_batch()
            if batch:
                await self._execute(batch)

    async def _batch_ready(self) -> bool:
        """Wait until a call should run now; False once stopped with nothing left to run or open.

        Waiting stream steps go first: they wait at most ``StreamPolicy.max_wait_s`` for company.
        """
        assert self._wakeup is not None
        while True:
            timeout: float | None = None
            wait_steps = self._streams.ready(time.monotonic())
            if wait_steps is not None:
                if wait_steps <= 0:
                    return True
                timeout = wait_steps
            elif self._pending:
                plan = plan_batch([item.frames for item in self._pending], self._offline_policy())
                remaining = self.policy.max_wait_s - (time.monotonic() - self._pending[0].enqueued)
                if plan.full or remaining <= 0 or not self._accepting:
                    return True
                timeout = remaining
            elif not self._accepting and not self._streams.open:
                return False
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _offline_policy(self) -> BatchPolicy:
        """The batching policy now: while a stream is open (here or on another model of the model thread),
        calls short enough not to hold its steps up for more than ``max_step_wait_s``."""
        if not self._streams.shared.count:
            return self.policy
        cap = self._streams.call_frames(self._frame_seconds)
        return dataclasses.replace(self.policy, max_batch_frames=min(cap, self.policy.max_batch_frames))

    def _take_batch(self) -> list[_Item]:
        policy = self._offline_policy()
        if self._streams.shared.count and self._pending[0].frames > policy.max_batch_frames:
            # Too long to run whole while streams wait: decoded as an internal stream, chunk by chunk. It
            # still counts as waiting (queue limit, depth, Retry-After) until it is done.
            item = self._pending.pop(0)
            self._chunked[asyncio.create_task(self._decode_in_chunks(item, policy.max_batch_frames))] = item.frames
            return []
        plan = plan_batch([item.frames for item in self._pending], policy)
        batch = [self._pending[i] for i in plan.indices]
        taken = set(plan.indices)
        self._pending = [item for i, item in enumerate(self._pending) if i not in taken]
        self._report_depth()
        return [item for item in batch if not item.future.done()]

    async def _execute(self, batch: list[_Item]) -> None:
        inputs = [item.inputs for item in batch]
        ids = [item.bandwidth_id for item in batch]
        bandwidth_ids = None if all(i is None for i in ids) else [int(i or 0) for i in ids]
        self._in_flight = len(batch)
        self._in_flight_frames = sum(item.frames for item in batch)
        ok = True
        try:
            timed = await timed_in_torch_thread(compute_batch, self.name, self.model, inputs, bandwidth_ids,
                                                self.retry_after)
            # When the call began in the model thread, and how long it ran there.
            outcomes, started, elapsed = timed.value, timed.started, timed.seconds
        except ThreadCallError as failed:
            ok, started, elapsed = False, failed.started, failed.seconds
            ids_text = ", ".join(item.request_id for item in batch if item.request_id) or "-"
            log.error("%s batch of %d failed (requests %s)", self.name, len(batch), ids_text, exc_info=failed.error)
            failure = BatchFailedError(f"the {self.name} model failed on this request's batch: {failed.error}")
            outcomes = [failure] * len(batch)
        except asyncio.CancelledError:  # a drain ran out of time: nobody will collect this batch
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(EngineStoppedError(f"the {self.name} engine stopped mid-batch"))
            raise
        finally:
            self._in_flight = 0
            frames, self._in_flight_frames = self._in_flight_frames, 0
        if ok:
            self._frame_seconds += EWMA_ALPHA * (elapsed / max(1, frames) - self._frame_seconds)
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue  # its caller left (deadline or disconnect) while it ran
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
        self._report_batch(batch, started, elapsed, ok)

    def _report_batch(self, batch: list[_Item], started: float, elapsed: float, ok: bool) -> None:
        observed = [item for item in batch if item.observed]
        if self._observer is None or not observed:
            return
        for item in observed:  # until the model thread began their call: behind another model's calls too
            self._observer.on_queue_wait(self.name, started - item.enqueued)
        frames = [item.frames for item in batch]
        stats = BatchStats(len(batch), sum(frames), len(batch) * max(frames), elapsed, ok)
        self._observer.on_batch(self.name, stats)
