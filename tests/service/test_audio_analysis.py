"""The audio analysis of an upload (``SerialWorker`` running ``ServedModel.analysis``) in slices: other model
work runs between them, the result is that of one whole pass, and a caller who gives up stops it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import torch
from service_helpers import wait_until

from service.engine import DeadlineExceededError, DeviceOutOfMemoryError, EngineStoppedError, SerialWorker
from service.engine.torch_thread import run_in_torch_thread
from service.runtime.models import ServedModel
from vocos_core.steps import Steps

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def encodec(models: dict[str, ServedModel]) -> ServedModel:
    served = models["encodec"]
    await served.audio_path.require(timeout=30)
    return served


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(24000 * seconds))).astype(np.float32)


def observed(steps: Steps, units: list[int]) -> Steps:
    """``steps``, noting each unit in ``units`` as it ends."""
    for piece in steps:
        units.append(len(units))
        yield piece


async def test_model_work_queued_during_an_analysis_runs_before_it_ends(encodec: ServedModel) -> None:
    """A stream step (here any call of the model thread) waits for one slice, not for the whole upload."""
    audio, units = speechlike(5.0), []
    worker = SerialWorker("features", 4, slice_s=0.0)  # one unit (a layer of a chunk) per slice
    analysis = asyncio.ensure_future(worker.run(lambda: observed(encodec.analysis(audio, 2), units)))
    first = await run_in_torch_thread(len, units)  # queued behind the first slice
    second = await run_in_torch_thread(len, units)  # queued while a slice ran: it runs next
    features = await analysis
    assert first <= 1 and second <= first + 2 and len(units) == 30  # 3 chunks of 9 units, 1 span of 3
    whole = encodec.model.audio_to_features(torch.from_numpy(audio), 2)[0]  # in one go: (1, C, T) -> (C, T)
    assert torch.equal(features, whole)


def counted(units: list[int], n: int) -> Steps:
    """``n`` units of 5 ms, each noted in ``units``, each giving its index as a piece."""
    for i in range(n):
        units.append(i)
        threading.Event().wait(0.005)
        yield torch.tensor([i])


async def test_an_analysis_past_its_deadline_runs_no_further_slice() -> None:
    units: list[int] = []
    worker = SerialWorker("features", 4, slice_s=0.0)
    with pytest.raises(DeadlineExceededError, match="while its audio was analysed"):
        await worker.run(counted, units, 10_000, timeout=0.1)
    await run_in_torch_thread(int)  # the slice that ran at the deadline is over
    ran = len(units)
    await asyncio.sleep(0.05)
    assert 0 < ran < 10_000 and len(units) == ran


async def test_a_cancelled_analysis_runs_no_further_slice() -> None:
    units: list[int] = []
    worker = SerialWorker("features", 4, slice_s=0.0)
    call = asyncio.ensure_future(worker.run(counted, units, 10_000))
    await asyncio.sleep(0.1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await run_in_torch_thread(int)
    ran = len(units)
    await asyncio.sleep(0.05)
    assert 0 < ran < 10_000 and len(units) == ran and worker.waiting == 0


async def test_without_a_budget_an_analysis_is_one_call() -> None:
    units: list[int] = []
    worker = SerialWorker("features", 4)
    call = asyncio.ensure_future(worker.run(counted, units, 20))
    await wait_until(lambda: len(units) > 0)  # the call runs
    assert await run_in_torch_thread(len, units) == 20  # queued behind all of it
    assert torch.equal(await call, torch.arange(20))


async def test_analyses_compute_one_at_a_time_in_the_order_they_came() -> None:
    """Under load the first ones finish in time, instead of all of them sharing the thread and all
    missing their deadlines."""
    worker = SerialWorker("features", 4, slice_s=0.0)
    logs: list[list[int]] = [[], [], []]
    order: list[int] = []

    async def call(i: int) -> None:
        await worker.run(counted, logs[i], 5)
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(3)))
    assert order == [0, 1, 2] and all(log == list(range(5)) for log in logs)


async def test_an_analysis_goes_on_while_its_pieces_are_not_read() -> None:
    """A streamed answer whose client reads slowly does not hold its place in the wait list: the analysis
    computes to its end, and its pieces wait for the reader."""
    worker = SerialWorker("features", 1, slice_s=0.0)
    units: list[int] = []
    analysis = worker.start(counted, units, 8)
    try:
        await wait_until(lambda: worker.waiting == 0, timeout=5)
        assert len(units) == 8
        assert [int(piece) async for piece in analysis] == list(range(8))
        worker.start(counted, [], 1).close()  # the wait list of one has room again
    finally:
        analysis.close()


async def test_a_failure_reaches_the_reader_after_the_pieces_before_it() -> None:
    def failing() -> Steps:
        yield torch.tensor([1])
        raise ValueError("bad upload")

    analysis = SerialWorker("features", 4, slice_s=0.0).start(failing)
    try:
        assert int(await anext(analysis)) == 1
        with pytest.raises(ValueError, match="bad upload"):
            await anext(analysis)
    finally:
        analysis.close()


async def test_a_close_as_a_slice_ends_runs_no_further_slice() -> None:
    """Before Python 3.12, wait_for drops a cancellation that arrives just as the slice it waits on is done;
    the analysis must stop all the same."""
    units: list[int] = []
    worker = SerialWorker("features", 4, slice_s=0.0)
    analysis = worker.start(counted, units, 20, deadline=time.monotonic() + 30)  # a deadline: wait_for waits

    class CloseOnFirstSlice(set):  # type: ignore[type-arg]
        def add(self, future: Any) -> None:
            if not self:
                future.add_done_callback(lambda _: analysis.close())  # lands as the first slice is done
            super().add(future)

    worker._slices = CloseOnFirstSlice()
    await wait_until(lambda: worker.waiting == 0, timeout=5)
    assert len(units) == 1
    pieces: list[int] = []
    with pytest.raises(EngineStoppedError):
        async for piece in analysis:
            pieces.append(int(piece))
    assert pieces == [0]  # the first slice's piece, then the end


async def test_an_analysis_closed_before_it_began_ends_its_reader_and_leaves_the_wait_list() -> None:
    worker = SerialWorker("features", 4, slice_s=0.0)
    units: list[int] = []
    analysis = worker.start(counted, units, 3)
    analysis.close()  # before its task's first step
    with pytest.raises(EngineStoppedError):
        await asyncio.wait_for(anext(analysis), 5)
    assert worker.waiting == 0 and units == []


async def test_a_full_wait_list_asks_for_a_retry_after_the_work_admitted_at_its_measured_rate() -> None:
    """Retry-After follows the sizes of the calls admitted, at the measured seconds per unit of size, as
    the batching queue's follows frames; it was the count of calls times the mean call, seeded by a short
    warm-up, and said 1 s over and over while a 20 s upload was analysed."""
    from service.engine import QueueFullError

    worker = SerialWorker("features", 1, slice_s=0.0)
    await worker.run(counted, [], 20, size=10)  # 20 units of 5 ms: about 0.01 s per unit of size
    assert 0.008 < worker.seconds_per_size < 0.05
    long = worker.start(counted, [], 400, size=200)  # about 2 s of work
    try:
        with pytest.raises(QueueFullError) as refused:
            worker.start(counted, [], 1, size=1)
        assert refused.value.retry_after == pytest.approx(200 * worker.seconds_per_size, abs=1)
        assert refused.value.retry_after >= 2
        await wait_until(lambda: worker._running_spent > 0.6 * 200 * worker.seconds_per_size, timeout=10)
        with pytest.raises(QueueFullError) as later:  # it counts down as the running call computes
            worker.start(counted, [], 1, size=1)
        assert later.value.retry_after < refused.value.retry_after
    finally:
        long.close()
    await wait_until(lambda: worker.waiting == 0, timeout=5)
    assert worker._admitted_size == 0 and worker.retry_after() == 1  # nothing admitted: the floor


class OnDevice:
    """A piece of features ``(1, C, t)`` as a GPU model's analysis makes it: where it is moved to the CPU."""

    def __init__(self) -> None:
        self.moved_in: str | None = None

    def __getitem__(self, index: int) -> OnDevice:
        return self

    def cpu(self) -> torch.Tensor:
        self.moved_in = threading.current_thread().name
        return torch.zeros(3, 2)


async def test_analysis_pieces_reach_the_event_loop_on_the_cpu(models: dict[str, ServedModel],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the features are made on the device: they are copied to the CPU in the model thread, where the
    copy waits for the device, not on the event loop (a streamed resynthesis read them there with .cpu())."""
    served, pieces = models["mel"], [OnDevice(), OnDevice()]
    monkeypatch.setattr(served.model, "audio_to_features_steps", lambda audio, bandwidth_id: iter(pieces))
    features = await SerialWorker("features", 4).run(served.analysis, np.zeros(24000, np.float32), None)
    assert torch.equal(features, torch.zeros(3, 4))
    assert all(p.moved_in is not None and p.moved_in.startswith("vocos-torch") for p in pieces)


def out_of_memory() -> Steps:
    yield torch.zeros(3, 2)
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


async def test_an_analysis_out_of_device_memory_asks_for_a_retry_and_frees_the_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[str] = []
    monkeypatch.setattr("service.engine.workers.release_cached_device_memory",
                        lambda: released.append(threading.current_thread().name))
    worker = SerialWorker("features", 4, slice_s=0.0)
    with pytest.raises(DeviceOutOfMemoryError, match="out of device memory") as failed:
        await worker.run(out_of_memory)
    assert failed.value.retry_after >= 1
    assert released and all(name.startswith("vocos-torch") for name in released)
    assert worker.waiting == 0
