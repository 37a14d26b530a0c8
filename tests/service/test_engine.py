"""The batching engine against a fake model: batching, waiting, overload, deadlines, cancellation,
failures, draining, and an event loop that stays free while a batch computes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
import torch
from service_helpers import wait_until

from service.engine import (
    BatchFailedError,
    BatchingEngine,
    BatchStats,
    DeadlineExceededError,
    DeviceOutOfMemoryError,
    EngineStoppedError,
    InvalidItemError,
    QueueFullError,
)
from service.engine.batching import BatchPolicy

pytestmark = pytest.mark.asyncio

HOP = 4


class FakeModel:
    """Output of item i: its channel sum, each frame repeated HOP times (so outputs identify inputs)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[list[int]] = []
        self.bandwidths: list[list[int] | None] = []
        self.fail: Exception | None = None

    def decode_batch(self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
                     ) -> list[torch.Tensor]:
        self.calls.append([int(x.shape[-1]) for x in inputs])
        self.bandwidths.append(None if bandwidth_ids is None else list(bandwidth_ids))
        assert self.gate.wait(timeout=10)
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        for x in inputs:
            if bool(torch.isnan(x).any()):
                raise ValueError("features: contains NaN or Inf")
        return [x.sum(0).repeat_interleave(HOP) for x in inputs]


class Recorder:
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.waits: list[float] = []
        self.batches: list[BatchStats] = []

    def on_queue_depth(self, model: str, depth: int) -> None:
        self.depths.append(depth)

    def on_queue_wait(self, model: str, seconds: float) -> None:
        self.waits.append(seconds)

    def on_batch(self, model: str, stats: BatchStats) -> None:
        self.batches.append(stats)


def item(frames: int, value: float = 1.0) -> torch.Tensor:
    return torch.full((3, frames), value)


async def started(model: FakeModel, recorder: Recorder | None = None, **policy: float) -> BatchingEngine:
    engine = BatchingEngine("mel", model, BatchPolicy(**policy), observer=recorder)  # type: ignore[arg-type]
    await engine.start()
    return engine


async def with_slot_held(model: FakeModel, **policy: float) -> tuple[BatchingEngine, asyncio.Future[torch.Tensor]]:
    """An engine with one batch slot (no wait), busy with a 5-frame request that ``model.gate`` holds."""
    model.gate.clear()
    engine = await started(model, max_wait_s=0.0, max_batch_size=1, **policy)
    running = asyncio.ensure_future(engine.submit(item(5)))
    await wait_until(lambda: engine.in_flight == 1, timeout=5.0)
    return engine, running


async def test_a_call_waiting_behind_another_models_counts_as_queue_wait_not_compute() -> None:
    """Engines share the one model thread: the time a batch waits there behind another model's call was
    measured as its compute (and fed the per-frame estimate that sizes chunked calls)."""
    slow, fast = FakeModel(delay=0.4), FakeModel()
    slow_recorder, fast_recorder = Recorder(), Recorder()
    slow_engine = await started(slow, slow_recorder, max_wait_s=0.0)
    fast_engine = await started(fast, fast_recorder, max_wait_s=0.0)
    busy = asyncio.ensure_future(slow_engine.submit(item(5)))
    await wait_until(lambda: slow_engine.in_flight == 1, timeout=5.0)
    await fast_engine.submit(item(5))
    await busy
    assert fast_recorder.batches[0].compute_s < 0.2  # its own call: no sleep
    assert fast_recorder.waits[0] > 0.2  # the rest of the slow call, waited in the model thread
    assert slow_recorder.batches[0].compute_s >= 0.4
    for engine in (slow_engine, fast_engine):
        await engine.drain(1)


async def test_an_unobserved_call_stays_out_of_the_measurements_unless_it_shares_a_batch() -> None:
    """The server's warm-up calls (seconds each while kernels compile) sat in the histograms' tails for good."""
    model, recorder = FakeModel(), Recorder()
    engine = await started(model, recorder, max_wait_s=0.05, max_batch_size=8)
    await engine.submit(item(5), observed=False)
    assert recorder.batches == [] and recorder.waits == []
    await asyncio.gather(engine.submit(item(5), observed=False), engine.submit(item(7)))  # one batch
    assert len(model.calls) == 2 and len(recorder.batches) == 1 and len(recorder.waits) == 1
    assert recorder.batches[0].size == 2  # the call's real work, warm-up item included
    await engine.drain(1)


async def test_concurrent_requests_share_a_batch_and_get_their_own_output() -> None:
    model, recorder = FakeModel(), Recorder()
    engine = await started(model, recorder, max_wait_s=0.05, max_batch_size=8)
    lengths = [10, 12, 15, 11, 9]
    outs = await asyncio.gather(*(engine.submit(item(t, i + 1.0)) for i, t in enumerate(lengths)))
    assert model.calls == [lengths]
    for i, (t, out) in enumerate(zip(lengths, outs, strict=True)):
        assert torch.equal(out, torch.full((t * HOP,), 3.0 * (i + 1)))
    stats = recorder.batches[0]
    assert (stats.size, stats.real_frames, stats.padded_frames, stats.ok) == (5, 57, 75, True)
    assert len(recorder.waits) == 5 and recorder.depths[-1] == 0
    await engine.drain(1)


async def test_a_lone_request_waits_at_most_max_wait() -> None:
    model = FakeModel()
    engine = await started(model, max_wait_s=0.05)
    start = time.monotonic()
    await engine.submit(item(5))
    elapsed = time.monotonic() - start
    assert 0.045 <= elapsed < 1.0
    await engine.drain(1)


async def test_a_full_batch_runs_without_waiting() -> None:
    model = FakeModel()
    engine = await started(model, max_wait_s=5.0, max_batch_size=4)
    start = time.monotonic()
    await asyncio.gather(*(engine.submit(item(5)) for _ in range(4)))
    assert time.monotonic() - start < 2.0
    assert model.calls == [[5, 5, 5, 5]]
    await engine.drain(1)


async def test_long_and_short_requests_run_in_separate_batches() -> None:
    model = FakeModel()
    engine = await started(model, max_wait_s=0.02, bucket_ratio=2.0)
    await asyncio.gather(engine.submit(item(10)), engine.submit(item(500)), engine.submit(item(12)))
    assert sorted(model.calls) == [[10, 12], [500]]
    await engine.drain(1)


async def test_bandwidth_ids_travel_per_item() -> None:
    model = FakeModel()
    engine = await started(model, max_wait_s=0.05)
    await asyncio.gather(*(engine.submit(item(8), bandwidth_id=b) for b in (3, 0, 2)))
    assert model.bandwidths == [[3, 0, 2]]
    await engine.drain(1)


async def test_event_loop_stays_free_while_a_batch_computes() -> None:
    model = FakeModel(delay=0.3)
    engine = await started(model, max_wait_s=0.0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    await engine.submit(item(5))
    tick_task.cancel()
    assert ticks >= 5  # a blocked loop would tick at most once during the 0.3 s model call
    await engine.drain(1)


async def test_queue_full_raises_with_retry_after() -> None:
    model = FakeModel()
    engine, running = await with_slot_held(model, max_queue_size=2)
    queued = [asyncio.ensure_future(engine.submit(item(5))) for _ in range(2)]
    await wait_until(lambda: engine.queue_depth == 2, timeout=5.0)
    with pytest.raises(QueueFullError, match="queue is full") as info:
        await engine.submit(item(5))
    assert info.value.retry_after >= 1
    model.gate.set()
    await asyncio.gather(running, *queued)
    await engine.drain(1)


async def test_deadline_frees_the_slot_and_the_request_is_never_computed() -> None:
    model = FakeModel()
    engine, blocker = await with_slot_held(model)
    with pytest.raises(DeadlineExceededError, match="deadline"):
        await engine.submit(item(7), timeout=0.05)
    assert engine.queue_depth == 0
    model.gate.set()
    await blocker
    await engine.submit(item(9))
    assert [c for c in model.calls if 7 in c] == []
    await engine.drain(1)


async def test_an_expired_deadline_is_refused_up_front() -> None:
    engine = await started(FakeModel())
    with pytest.raises(DeadlineExceededError):
        await engine.submit(item(5), timeout=0.0)
    await engine.drain(1)


async def test_cancelled_request_leaves_the_queue_and_is_not_computed() -> None:
    model = FakeModel()
    engine, blocker = await with_slot_held(model)
    gone = asyncio.ensure_future(engine.submit(item(7)))
    await wait_until(lambda: engine.queue_depth == 1, timeout=5.0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert engine.queue_depth == 0
    model.gate.set()
    await blocker
    assert model.calls == [[5]]
    await engine.drain(1)


async def test_a_failing_batch_fails_only_its_requests_and_the_engine_keeps_serving() -> None:
    model, recorder = FakeModel(), Recorder()
    engine = await started(model, recorder, max_wait_s=0.02)
    model.fail = RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")
    results = await asyncio.gather(engine.submit(item(5)), engine.submit(item(6)), return_exceptions=True)
    assert all(isinstance(r, BatchFailedError) and "CUDNN_STATUS_EXECUTION_FAILED" in str(r) for r in results)
    assert recorder.batches[-1].ok is False
    model.fail = None
    assert (await engine.submit(item(5))).shape == (5 * HOP,)
    assert engine.alive
    await engine.drain(1)


async def test_a_failing_batch_counts_its_own_time_in_the_model_thread_as_compute() -> None:
    """A failed call's compute was timed from the event loop, with the wait behind another model in it."""
    slow, failing, recorder = FakeModel(delay=0.4), FakeModel(delay=0.1), Recorder()
    failing.fail = RuntimeError("boom")
    slow_engine = await started(slow, max_wait_s=0.0)
    failing_engine = await started(failing, recorder, max_wait_s=0.0)
    busy = asyncio.ensure_future(slow_engine.submit(item(5)))
    await wait_until(lambda: slow_engine.in_flight == 1, timeout=5.0)
    with pytest.raises(BatchFailedError, match="boom"):
        await failing_engine.submit(item(5))
    await busy
    assert recorder.batches[0].ok is False
    assert 0.1 <= recorder.batches[0].compute_s < 0.3
    for engine in (slow_engine, failing_engine):
        await engine.drain(1)


class OutOfMemoryModel(FakeModel):
    """Runs out of device memory on any call of more than ``budget`` frames in all."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def decode_batch(self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
                     ) -> list[torch.Tensor]:
        if sum(int(x.shape[-1]) for x in inputs) > self.budget:
            self.calls.append([int(x.shape[-1]) for x in inputs])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().decode_batch(inputs, bandwidth_ids)


async def test_out_of_memory_retries_the_batch_in_halves() -> None:
    model = OutOfMemoryModel(budget=12)
    engine = await started(model, max_wait_s=0.05)
    outputs = await asyncio.gather(*(engine.submit(item(t, float(t))) for t in (5, 6, 7, 4)))
    assert [o[0].item() for o in outputs] == [15.0, 18.0, 21.0, 12.0]  # each its own: 3 channels x value
    assert model.calls == [[5, 6, 7, 4], [5, 6], [7, 4]]
    await engine.drain(1)


async def test_out_of_memory_alone_fails_only_that_request_with_retry_after() -> None:
    model = OutOfMemoryModel(budget=12)
    engine = await started(model, max_wait_s=0.05)
    big, small = await asyncio.gather(engine.submit(item(20)), engine.submit(item(8)), return_exceptions=True)
    assert isinstance(big, DeviceOutOfMemoryError) and big.retry_after >= 1
    assert isinstance(small, torch.Tensor) and small.shape == (8 * HOP,)
    assert engine.alive
    await engine.drain(1)


async def test_a_value_error_is_pinned_on_the_item_that_caused_it() -> None:
    model = FakeModel()
    engine = await started(model, max_wait_s=0.05)
    bad = item(6)
    bad[0, 0] = float("nan")
    good, wrong, other = await asyncio.gather(
        engine.submit(item(5)), engine.submit(bad), engine.submit(item(7)), return_exceptions=True
    )
    assert isinstance(wrong, InvalidItemError) and "NaN" in str(wrong)
    assert isinstance(good, torch.Tensor) and isinstance(other, torch.Tensor)
    assert model.calls[0] == [5, 6, 7] and [5] in model.calls and [7] in model.calls
    await engine.drain(1)


async def test_drain_finishes_queued_work_then_refuses() -> None:
    model = FakeModel(delay=0.05)
    engine = await started(model, max_wait_s=0.0, max_batch_size=1)
    pending = [asyncio.ensure_future(engine.submit(item(5 + i))) for i in range(4)]
    await asyncio.sleep(0)
    assert await engine.drain(5) is True
    assert [p.result().shape[0] for p in pending] == [(5 + i) * HOP for i in range(4)]
    assert not engine.alive
    with pytest.raises(EngineStoppedError):
        await engine.submit(item(5))


async def test_stop_accepting_refuses_new_but_finishes_queued() -> None:
    model = FakeModel()
    engine, first = await with_slot_held(model)
    second = asyncio.ensure_future(engine.submit(item(6)))
    await wait_until(lambda: engine.queue_depth == 1, timeout=5.0)
    engine.stop_accepting()
    with pytest.raises(EngineStoppedError, match="not accepting"):
        await engine.submit(item(7))
    model.gate.set()
    assert (await first).shape == (20,) and (await second).shape == (24,)
    await engine.drain(1)


async def test_drain_timeout_fails_what_is_left() -> None:
    model = FakeModel()
    engine, first = await with_slot_held(model)
    second = asyncio.ensure_future(engine.submit(item(6)))
    await wait_until(lambda: engine.queue_depth == 1, timeout=5.0)
    assert await engine.drain(0.1) is False
    for left in (first, second):  # the running batch and the queued request both fail at once
        with pytest.raises(EngineStoppedError):
            await asyncio.wait_for(left, 1)
    model.gate.set()


async def test_retry_after_grows_with_the_queue() -> None:
    model = FakeModel(delay=0.2)
    engine = await started(model, max_wait_s=0.0, max_batch_size=1, max_queue_size=100)
    await engine.submit(item(5))
    base = engine.retry_after()
    model.delay = 0.0
    model.gate.clear()
    tasks = [asyncio.ensure_future(engine.submit(item(5))) for _ in range(30)]
    await wait_until(lambda: engine.queue_depth >= 29, timeout=5.0)
    assert engine.retry_after() > base >= 1
    model.gate.set()
    await asyncio.gather(*tasks)
    await engine.drain(5)


class PerFrameModel(FakeModel):
    """A FakeModel whose call costs ``seconds_per_frame`` for every frame of the batch."""

    def __init__(self, seconds_per_frame: float) -> None:
        super().__init__()
        self.seconds_per_frame = seconds_per_frame

    def decode_batch(self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
                     ) -> list[torch.Tensor]:
        self.delay = self.seconds_per_frame * sum(int(x.shape[-1]) for x in inputs)
        return super().decode_batch(inputs, bandwidth_ids)


@pytest.mark.slow
async def test_retry_after_follows_the_queued_frames_not_the_request_count() -> None:
    """Short requests measured, then long ones queued: Retry-After tells how long they take to clear."""
    model = PerFrameModel(seconds_per_frame=2e-4)
    engine = await started(model, max_wait_s=0.0, max_batch_size=1, max_queue_size=8)
    for _ in range(4):
        await engine.submit(item(100))  # 20 ms each
    model.gate.clear()
    running = asyncio.ensure_future(engine.submit(item(3000)))
    await wait_until(lambda: engine.in_flight == 1, timeout=5.0)
    queued = [asyncio.ensure_future(engine.submit(item(3000))) for _ in range(8)]
    await wait_until(lambda: engine.queue_depth == 8, timeout=5.0)
    with pytest.raises(QueueFullError) as info:
        await engine.submit(item(3000))
    started_at = time.monotonic()
    model.gate.set()
    await asyncio.gather(running, *queued)
    cleared = time.monotonic() - started_at  # 9 x 0.6 s
    assert cleared / 2 <= info.value.retry_after <= 2 * cleared + 1, (info.value.retry_after, cleared)
    await engine.drain(1)
