"""Streams in the batching engine: concurrent steps batched, exact audio, limits, cancellation, drain,
and whole-utterance requests chunked while streams are open."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from service.engine import (
    BatchFailedError,
    BatchingEngine,
    BatchPolicy,
    BatchStats,
    DeviceOutOfMemoryError,
    EngineStoppedError,
    OpenStreams,
    QueueFullError,
    SerialWorker,
    StreamLimitError,
    StreamPolicy,
    StreamStats,
)
from service.engine.streams import Step, StreamSlots
from service.engine.torch_thread import run_in_torch_thread
from service.runtime.models import ServedModel
from vocos_core.steps import Steps

pytestmark = pytest.mark.asyncio


class Recorder:
    def __init__(self) -> None:
        self.batches: list[BatchStats] = []
        self.steps: list[StreamStats] = []

    def on_queue_depth(self, model: str, depth: int) -> None:
        pass

    def on_queue_wait(self, model: str, seconds: float) -> None:
        pass

    def on_batch(self, model: str, stats: BatchStats) -> None:
        self.batches.append(stats)

    def on_stream_batch(self, model: str, stats: StreamStats) -> None:
        self.steps.append(stats)


@pytest.fixture
def mel(models: dict[str, ServedModel]) -> ServedModel:
    return models["mel"]


def chunks(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, x.shape[-1], size):
        yield x[:, start:start + size]


async def run_stream(engine: BatchingEngine, x: torch.Tensor, size: int) -> torch.Tensor:
    stream = engine.open_stream()
    try:
        pieces = [await stream.push(c) for c in chunks(x, size)]
        pieces.append(await stream.push(x[:, :0], final=True))
        return torch.cat(pieces)
    finally:
        stream.close()


async def started(mel: ServedModel, recorder: Recorder | None = None, **streams: float) -> BatchingEngine:
    engine = BatchingEngine("mel", mel, BatchPolicy(max_wait_s=0.001), observer=recorder,
                            stream_policy=StreamPolicy(**streams))  # type: ignore[arg-type]
    await engine.start()
    return engine


async def test_concurrent_streams_step_together_and_each_equals_its_offline_decode(mel: ServedModel) -> None:
    recorder = Recorder()
    engine = await started(mel, recorder, max_wait_s=0.05)
    feats = [torch.randn(mel.n_features, n) for n in (40, 33, 51, 20)]
    outputs = await asyncio.gather(*(run_stream(engine, f, 5) for f in feats))
    await engine.drain(5)
    for f, y in zip(feats, outputs, strict=True):
        expected = mel.decode_batch([f])[0]
        assert y.shape == expected.shape
        assert float((y - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    # Four streams of 4-11 steps each in far fewer calls than steps: they were batched together.
    assert max(s.streams for s in recorder.steps) == 4
    assert len(recorder.steps) < sum(-(-f.shape[1] // 5) + 1 for f in feats) / 2


class FailingSteps:
    """``mel`` whose stream steps run ``seconds`` and then raise."""

    def __init__(self, mel: ServedModel, seconds: float) -> None:
        self.mel, self.seconds = mel, seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.mel, name)

    def decode_steps(self, *args: Any) -> list[torch.Tensor]:
        time.sleep(self.seconds)
        raise RuntimeError("boom")


async def test_a_failed_step_fails_its_streams_and_counts_its_compute(mel: ServedModel) -> None:
    recorder = Recorder()
    engine = await started(FailingSteps(mel, 0.1), recorder)  # type: ignore[arg-type]
    stream = engine.open_stream()
    with pytest.raises(BatchFailedError, match="boom"):
        await stream.push(torch.randn(mel.n_features, 10))
    stream.close()
    await engine.drain(1)
    assert recorder.steps[0].streams == 1 and recorder.steps[0].compute_s >= 0.1


class OutOfMemorySteps(FailingSteps):
    """``mel`` whose stream steps run out of device memory (a CUDA caching allocator's error)."""

    def decode_steps(self, *args: Any) -> list[torch.Tensor]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


async def test_a_step_out_of_device_memory_fails_its_streams_with_retry_after_and_frees_the_cache(
        mel: ServedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # As a whole request out of memory: 503 device_out_of_memory with Retry-After, not a 500, and the
    # allocator's cached blocks released (in the model thread) for the requests that follow.
    released: list[str] = []
    monkeypatch.setattr("service.engine.compute.release_cached_device_memory",
                        lambda: released.append(threading.current_thread().name))
    engine = await started(OutOfMemorySteps(mel, 0.0))  # type: ignore[arg-type]
    stream = engine.open_stream()
    with pytest.raises(DeviceOutOfMemoryError, match="out of device memory") as failed:
        await stream.push(torch.randn(mel.n_features, 10))
    assert failed.value.retry_after >= 1
    assert released and all(name.startswith("vocos-torch") for name in released)
    assert engine.alive
    stream.close()
    await engine.drain(1)


async def test_the_stream_limit_refuses_one_more_until_a_stream_closes(mel: ServedModel) -> None:
    engine = await started(mel, max_streams=2)
    first, _second = engine.open_stream(), engine.open_stream()
    with pytest.raises(StreamLimitError, match="2 streams open"):
        engine.open_stream()
    first.close()
    engine.open_stream().close()
    await engine.drain(0)


async def test_a_long_request_is_chunked_while_a_stream_is_open_and_stays_exact(mel: ServedModel) -> None:
    recorder = Recorder()
    engine = await started(mel, recorder, max_step_frames=64, max_step_wait_s=1e-6)
    stream = engine.open_stream()
    long = torch.randn(mel.n_features, 300)
    offline = asyncio.create_task(engine.submit(long))
    while not recorder.steps:  # the request now runs as internal stream steps of at most 64 frames
        await asyncio.sleep(0.001)
    step = await stream.push(torch.randn(mel.n_features, 8))  # a real stream's step is not held up
    assert not offline.done(), "the stream's step waited for the whole request"
    audio = await offline
    stream.close()
    await engine.drain(5)
    expected = mel.decode_batch([long])[0]
    assert float((audio - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    assert recorder.batches == [] and max(s.frames for s in recorder.steps) <= 64 + 8
    assert step.dim() == 1


async def test_drain_lets_open_streams_finish_and_refuses_new_ones(mel: ServedModel) -> None:
    engine = await started(mel)
    stream = engine.open_stream()
    await stream.push(torch.randn(mel.n_features, 10))
    drained = asyncio.create_task(engine.drain(10))
    await asyncio.sleep(0.05)
    with pytest.raises(EngineStoppedError):
        engine.open_stream()
    assert not drained.done(), "the drain did not wait for the open stream"
    await stream.push(torch.randn(mel.n_features, 10), final=True)
    stream.close()
    assert await drained is True


async def test_drain_timeout_ends_streams_still_open(mel: ServedModel) -> None:
    engine = await started(mel)
    stream = engine.open_stream()
    await stream.push(torch.randn(mel.n_features, 10))
    assert await engine.drain(0.05) is False
    with pytest.raises(EngineStoppedError):
        await stream.push(torch.randn(mel.n_features, 10))


async def test_closing_a_stream_drops_its_waiting_step(mel: ServedModel) -> None:
    engine = await started(mel, max_wait_s=10.0)
    waiting, other = engine.open_stream(), engine.open_stream()  # a step waits up to 10 s for company
    push = asyncio.create_task(waiting.push(torch.randn(mel.n_features, 10)))
    await asyncio.sleep(0.02)
    waiting.close()
    with pytest.raises(asyncio.CancelledError):
        await push
    assert engine.open_streams == 1
    other.close()
    await engine.drain(1)


async def test_after_a_call_its_streams_get_the_company_wait_to_submit_again() -> None:
    slots = StreamSlots("mel", StreamPolicy(max_wait_s=0.01))
    a, b = object(), object()
    slots.open.update({a, b})  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    slots.steps.append(Step(a, torch.zeros(1, 1), False, 0.0, loop.create_future()))
    # Stream a waited long, but b was answered by the call that just ended at t = 1: b gets its moment.
    slots.last_call_end = 1.0
    assert slots.ready(1.004) == pytest.approx(0.006)
    assert slots.ready(1.02) == 0.0
    slots.steps.append(Step(b, torch.zeros(1, 1), False, 1.005, loop.create_future()))
    assert slots.ready(1.006) == 0.0  # every open stream has a step in


def thread_name(names: list[str]) -> Steps:
    """One unit that notes the name of the thread running it."""
    names.append(threading.current_thread().name)
    yield torch.zeros(1)


async def test_every_model_call_runs_in_the_one_model_thread(mel: ServedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real_steps, real_batch = mel.decode_steps, mel.decode_batch

    def steps(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real_steps(*args)

    def batch(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real_batch(*args, **kwargs)

    monkeypatch.setitem(vars(mel), "decode_steps", steps)  # setitem: undone by deleting it again
    monkeypatch.setitem(vars(mel), "decode_batch", batch)
    engine = await started(mel)
    await run_stream(engine, torch.randn(mel.n_features, 12), 6)
    await engine.submit(torch.randn(mel.n_features, 12))
    worker = SerialWorker("features", 4)
    await worker.run(thread_name, threads)
    threads.append(await run_in_torch_thread(lambda: threading.current_thread().name))
    await engine.drain(5)
    worker.close()
    # PyTorch's CPU thread team belongs to the calling thread: one thread for all, so one team.
    assert len(threads) >= 5 and len(set(threads)) == 1 and threads[0].startswith("vocos-torch")


async def test_a_long_push_of_a_low_latency_stream_guesses_only_at_its_end(mel: ServedModel) -> None:
    """Cut into steps of 8 frames, a 40-frame push lets out what one step of 40 frames does: the steps before
    the last guess nothing (their exact audio goes out with the rest anyway), so no sample is a stale guess."""
    engine = await started(mel, max_step_frames=8)
    x = torch.randn(mel.n_features, 40)
    stream = engine.open_stream(lookahead_frames=0)
    try:
        cut = await stream.push(x)
    finally:
        stream.close()
    await engine.drain(5)
    state = mel.start_stream(None, lookahead_frames=0)
    whole = (await run_in_torch_thread(mel.decode_steps, [state], [x], [False]))[0]
    assert cut.shape == whole.shape and cut.numel() > 0
    assert float((cut - whole).abs().max()) <= 1e-5 * float(whole.abs().max())


async def test_a_stream_of_one_engine_keeps_the_other_engines_calls_short(mel: ServedModel) -> None:
    """Every model runs in the one model thread: a whole-utterance call of model B holds up the steps of
    model A's streams as much as one of A's own would, so B chunks its long requests too."""
    shared, recorder = OpenStreams(), Recorder()
    policy = StreamPolicy(max_step_wait_s=0.001)
    a = BatchingEngine("a", mel, BatchPolicy(max_wait_s=0.001), stream_policy=policy, open_streams=shared)
    b = BatchingEngine("b", mel, BatchPolicy(max_wait_s=0.001), observer=recorder, stream_policy=policy,
                       open_streams=shared)
    await a.start()
    await b.start()
    x = torch.randn(mel.n_features, 300)
    stream = a.open_stream()
    chunked = await b.submit(x)
    assert recorder.steps and not recorder.batches  # b ran the request as steps of a few frames
    assert max(s.frames for s in recorder.steps) < 300
    stream.close()
    whole = await b.submit(x)
    assert len(recorder.batches) == 1  # no stream open anywhere: one call
    for a_engine in (a, b):
        await a_engine.drain(5)
    assert float((chunked - whole).abs().max()) <= 1e-5 * float(whole.abs().max())


async def test_a_request_decoded_in_chunks_stops_when_its_caller_leaves(mel: ServedModel) -> None:
    """The steps after the one running when the caller gave up (its deadline, a client gone) are never
    computed, and the request leaves the queue: it used to be decoded to its end."""
    recorder = Recorder()
    engine = await started(mel, recorder, max_step_frames=16, max_step_wait_s=1e-6)
    stream = engine.open_stream()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(engine.submit(torch.randn(mel.n_features, 4000)), 0.05)  # 250 steps of 16
    await asyncio.sleep(0.3)
    steps_after = len(recorder.steps)
    await asyncio.sleep(0.3)
    assert len(recorder.steps) == steps_after < 250
    assert engine.queue_depth == 0 and not engine._chunked
    stream.close()
    await engine.drain(5)


async def test_a_request_decoded_in_chunks_still_counts_against_the_queue(mel: ServedModel) -> None:
    engine = BatchingEngine("mel", mel, BatchPolicy(max_wait_s=0.001, max_queue_size=1),
                            stream_policy=StreamPolicy(max_step_wait_s=0.001))
    await engine.start()
    stream = engine.open_stream()
    first = asyncio.create_task(engine.submit(torch.randn(mel.n_features, 2000)))
    while not engine._chunked:  # taken off the queue, now decoded chunk by chunk
        await asyncio.sleep(0.001)
    assert engine.queue_depth == 1 and engine.retry_after() > 0
    with pytest.raises(QueueFullError):
        await engine.submit(torch.randn(mel.n_features, 10))
    stream.close()
    await first
    assert engine.queue_depth == 0
    await engine.drain(5)
