"""Helpers of the service tests: a started app with its client, the app behind a real uvicorn on
loopback, audio/npy bodies, controllable models."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import torch
import uvicorn
from fastapi import FastAPI

from service.http.app import create_app
from service.http.server import uvicorn_config
from service.http.state import ServiceState, state_of
from service.runtime.models import ServedModel
from service.settings import Settings


@dataclass
class AppHarness:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def state(self) -> ServiceState:
        return state_of(self.app)


def settings_with(base: Settings, **overrides: Any) -> Settings:
    """``base`` with some fields replaced (validated again, as settings built at start are)."""
    return Settings(**{**base.model_dump(), **overrides})


# What the `make_app` fixture returns: `async with make_app(max_batch_size=1) as harness:`.
AppFactory = Callable[..., AbstractAsyncContextManager[AppHarness]]


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running_app(
    settings: Settings, models: Mapping[str, ServedModel], wait_ready: bool = True
) -> AsyncIterator[AppHarness]:
    """The app started through its lifespan (warm-up included), with an in-process client."""
    app = create_app(settings, models)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            harness = AppHarness(app, client)
            if wait_ready:
                await wait_until(lambda: harness.state.ready)
            yield harness


class _InProcessServer(uvicorn.Server):
    """uvicorn that leaves the test process's signal handlers alone."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


@dataclass
class LiveServer:
    """A started app behind a real uvicorn on 127.0.0.1, and an HTTP client for it."""

    app: FastAPI
    port: int
    client: httpx.AsyncClient

    @property
    def state(self) -> ServiceState:
        return state_of(self.app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request_count(self, endpoint: str, status: int) -> float:
        value = self.state.metrics.registry.get_sample_value(
            "vocos_requests_total", {"endpoint": endpoint, "status": str(status)}
        )
        return value or 0.0


@asynccontextmanager
async def live_server(settings: Settings, models: Mapping[str, ServedModel]) -> AsyncIterator[LiveServer]:
    """``create_app`` served by uvicorn on a free loopback port, in this event loop, until the block ends."""
    app = create_app(settings, models)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    # The server's own configuration (header timeout, connection cap, protocol), quieter and quicker to stop.
    config = uvicorn_config(app, settings, log_level="warning", timeout_graceful_shutdown=5)
    server = _InProcessServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started or task.done(), timeout=30)
        assert not task.done(), "uvicorn stopped during start-up"
        state = state_of(app)
        await wait_until(lambda: state.ready, timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield LiveServer(app, port, client)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        sock.close()


class GatedModel(ServedModel):
    """A served model whose batches wait for ``gate`` (opened by default) and that records each call."""

    def __init__(self, base: ServedModel) -> None:
        self.__dict__.update(base.__dict__)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[list[int]] = []  # frame counts of each batch
        self.fail_with: BaseException | None = None

    def decode_batch(
        self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        self.calls.append([int(x.shape[-1]) for x in inputs])
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise RuntimeError("test gate never opened")
        if self.fail_with is not None:
            raise self.fail_with
        return super().decode_batch(inputs, bandwidth_ids)


def read_audio(content: bytes) -> tuple[np.ndarray, int, str]:
    """Decoded samples (float32), rate and libsndfile subtype of a response body."""
    info = sf.info(io.BytesIO(content))
    data, rate = sf.read(io.BytesIO(content), dtype="float32")
    return data, rate, info.subtype


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A 220 Hz tone plus a little noise, ``(S,)`` or ``(S, channels)``, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1).astype(np.float32)
