"""Faults while serving: clients that leave while queued or computing, a batch that raises, a device
out of memory. Each test checks the fault's own requests, everyone else's, and what is left behind."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
import torch
from reliability_helpers import FaultyModel, RawConnection, http_request
from service_helpers import AppHarness, GatedModel, LiveServer, read_audio, wait_until

from service.runtime.models import ServedModel
from service.testing import npy_bytes

pytestmark = pytest.mark.asyncio

NPY = {"content-type": "application/x-npy"}


def random_mel(frames: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((100, frames)) - 2.0).astype(np.float32)


def assert_is_solo_output(response: httpx.Response, served: ServedModel, mel: np.ndarray) -> None:
    """The response is 200 and its float32 audio is this input's own decode (alone), within 1e-5."""
    assert response.status_code == 200, response.text
    expected = served.model.decode(torch.from_numpy(mel)[None])[0].numpy()
    got = read_audio(response.content)[0]
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-5 * max(1e-3, float(np.max(np.abs(expected))))


def post_mel(client: httpx.AsyncClient, mel: np.ndarray) -> asyncio.Future[httpx.Response]:
    return asyncio.ensure_future(client.post("/decode/mel?format=wav32f", content=npy_bytes(mel), headers=NPY))


def npy_request(mel: np.ndarray) -> bytes:
    return http_request("POST", "/decode/mel", npy_bytes(mel), [("Content-Type", "application/x-npy")])


async def assert_nothing_left(server: LiveServer | AppHarness, tasks_before: int) -> None:
    """No queued or running request, no in-flight request in the metrics, no task left behind."""
    engine = server.state.slots["mel"].engine
    registry = server.state.metrics.registry

    def settled() -> bool:  # the last handler may still be returning when its client has the answer
        gauge = registry.get_sample_value("vocos_inflight_requests")
        return (engine.queue_depth, engine.in_flight, gauge) == (0, 0, 0.0) and len(asyncio.all_tasks()) <= tasks_before

    await wait_until(settled, timeout=5)


async def hold_the_model(
    client: httpx.AsyncClient, gated: GatedModel, mel: np.ndarray
) -> asyncio.Future[httpx.Response]:
    """Close the gate and start a request that then occupies the model until the gate opens."""
    gated.calls.clear()
    gated.entered.clear()
    gated.gate.clear()
    blocker = post_mel(client, mel)
    await wait_until(gated.entered.is_set)
    return blocker


async def test_client_leaving_while_queued_frees_its_slot_and_is_never_computed(
    make_live, models: dict[str, ServedModel]
) -> None:
    served = models["mel"]
    gated = GatedModel(served)
    mels = {name: random_mel(frames, seed) for seed, (name, frames) in enumerate([("a", 40), ("b", 41), ("c", 42)])}
    async with make_live(models={"mel": gated}, max_batch_size=1) as server:
        engine = server.state.slots["mel"].engine
        tasks_before = len(asyncio.all_tasks())
        blocker = await hold_the_model(server.client, gated, mels["a"])
        leaver = await RawConnection.open(server.port)
        await leaver.send(npy_request(mels["b"]))
        await wait_until(lambda: engine.queue_depth == 1)
        stayer = post_mel(server.client, mels["c"])
        await wait_until(lambda: engine.queue_depth == 2)

        leaver.close()
        closed = time.monotonic()
        # Its slot is freed while the model is still busy, not when the queue reaches it.
        await wait_until(lambda: engine.queue_depth == 1 and server.request_count("/decode/mel", 499) == 1)
        print(f"queued client left: slot freed {1000 * (time.monotonic() - closed):.0f} ms later")
        gated.gate.set()
        first, last = await asyncio.gather(blocker, stayer)
        assert_is_solo_output(first, served, mels["a"])
        assert_is_solo_output(last, served, mels["c"])
        assert gated.calls == [[40], [42]]  # the leaver's 41 frames were never computed
        await assert_nothing_left(server, tasks_before)


async def test_client_leaving_while_its_batch_computes_gets_dropped_and_others_are_served(
    make_live, models: dict[str, ServedModel]
) -> None:
    served = models["mel"]
    gated = GatedModel(served)
    mel_leaver, mel_stayer = random_mel(50, 1), random_mel(52, 2)
    async with make_live(models={"mel": gated}, max_batch_size=1) as server:
        engine = server.state.slots["mel"].engine
        tasks_before = len(asyncio.all_tasks())
        gated.calls.clear()
        gated.entered.clear()
        gated.gate.clear()
        leaver = await RawConnection.open(server.port)
        await leaver.send(npy_request(mel_leaver))
        await wait_until(gated.entered.is_set)
        stayer = post_mel(server.client, mel_stayer)
        await wait_until(lambda: engine.queue_depth == 1 and engine.in_flight == 1)

        leaver.close()
        closed = time.monotonic()
        # The handler returns at once (status 499 recorded) although its batch is still computing.
        await wait_until(lambda: server.request_count("/decode/mel", 499) == 1)
        print(f"computing client left: handler done {1000 * (time.monotonic() - closed):.0f} ms later")
        assert engine.in_flight == 1
        gated.gate.set()
        assert_is_solo_output(await stayer, served, mel_stayer)
        assert gated.calls == [[50], [52]]
        assert server.request_count("/decode/mel", 200) == 1
        await assert_nothing_left(server, tasks_before)


async def test_an_exception_in_one_batch_fails_only_its_requests(
    make_app, models: dict[str, ServedModel]
) -> None:
    served = models["mel"]
    poisoned = 37
    faulty = FaultyModel(served, lambda frames: RuntimeError("injected fault") if poisoned in frames else None)
    mels = [random_mel(frames, seed) for seed, frames in enumerate([50, poisoned, 45, 39, 47])]
    async with make_app(models={"mel": faulty}, max_batch_size=2, bucket_ratio=4.0) as app:
        engine = app.state.slots["mel"].engine
        tasks_before = len(asyncio.all_tasks())
        blocker = await hold_the_model(app.client, faulty, mels[0])
        waiting = []
        for depth, mel in enumerate(mels[1:], start=1):  # one at a time, so the queue order is known
            waiting.append(post_mel(app.client, mel))
            await wait_until(lambda depth=depth: engine.queue_depth == depth)
        faulty.gate.set()
        responses = await asyncio.gather(blocker, *waiting)

        assert faulty.calls == [[50], [poisoned, 45], [39, 47]]
        for response in responses[1:3]:  # the poisoned batch: both of its requests fail, with their id
            assert response.status_code == 500
            error = response.json()["error"]
            assert error["type"] == "internal" and error["request_id"] in error["message"]
        for index in (0, 3, 4):
            assert_is_solo_output(responses[index], served, mels[index])
        # The engine keeps serving: health, readiness and a new request all succeed.
        assert (await app.client.get("/healthz")).status_code == 200
        assert (await app.client.get("/readyz")).status_code == 200
        after = random_mel(44, 9)
        assert_is_solo_output(await post_mel(app.client, after), served, after)
        await assert_nothing_left(app, tasks_before)


def out_of_memory_above(budget: int):
    """A fault that acts like a device whose memory holds at most ``budget`` frames per call."""

    def fault(frames: list[int]) -> BaseException | None:
        if sum(frames) > budget:
            return torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {sum(frames)} frames")
        return None

    return fault


async def test_out_of_memory_splits_the_batch_and_retries_its_halves(
    make_app, models: dict[str, ServedModel]
) -> None:
    served = models["mel"]
    faulty = FaultyModel(served, out_of_memory_above(100))
    mels = [random_mel(40 + i, 20 + i) for i in range(4)]
    async with make_app(models={"mel": faulty}, max_batch_size=4, bucket_ratio=4.0) as app:
        engine = app.state.slots["mel"].engine
        blocker = await hold_the_model(app.client, faulty, random_mel(30, 19))
        waiting = []
        for depth, mel in enumerate(mels, start=1):
            waiting.append(post_mel(app.client, mel))
            await wait_until(lambda depth=depth: engine.queue_depth == depth)
        faulty.gate.set()
        responses = await asyncio.gather(*waiting)
        assert (await blocker).status_code == 200
    for response, mel in zip(responses, mels, strict=True):
        assert_is_solo_output(response, served, mel)
    # 4 x ~41 frames do not fit; each half (2 x ~41) does.
    assert faulty.calls[1:] == [[40, 41, 42, 43], [40, 41], [42, 43]]


async def test_out_of_memory_alone_answers_503_and_the_server_recovers(
    make_app, models: dict[str, ServedModel]
) -> None:
    served = models["mel"]
    faulty = FaultyModel(served, out_of_memory_above(100))
    async with make_app(models={"mel": faulty}) as app:
        faulty.calls.clear()
        response = await post_mel(app.client, random_mel(120, 5))
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "device_out_of_memory"
        assert int(response.headers["retry-after"]) >= 1
        assert faulty.calls == [[120]]
        assert (await app.client.get("/healthz")).status_code == 200
        mel = random_mel(60, 6)
        assert_is_solo_output(await post_mel(app.client, mel), served, mel)
