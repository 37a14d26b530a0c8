"""The audio analysis of an upload (``SerialWorker`` running ``ServedModel.analysis``) in slices: other model
work runs between them, the result is that of one whole pass, and a caller who gives up stops it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import pytest_asyncio
import torch

from service.engine import DeadlineExceededError, SerialWorker
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
    assert first <= 1 and second <= first + 2 and len(units) == 30  # 3 chunks of 10 units
    assert torch.equal(features, encodec.audio_to_features(audio, 2))  # as one whole pass


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
    await asyncio.sleep(0)  # the call is queued
    assert await run_in_torch_thread(len, units) == 20  # queued behind all of it
    assert torch.equal(await call, torch.arange(20))
