"""Helpers of the reliability tests: raw HTTP over sockets, an app driven from synchronous code (for
hypothesis), and models that fail on purpose. The real uvicorn server on loopback (``live_server``)
is in service_helpers, shared with the browser tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import torch
from service_helpers import GatedModel

from service.http.app import create_app
from service.http.state import state_of
from service.runtime.models import ServedModel
from service.settings import Settings

T = TypeVar("T")


# -- raw HTTP over a socket --------------------------------------------------------------------------


class RawConnection:
    """An HTTP/1.1 connection driven byte by byte, for what well-behaved clients never send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, timeout: float) -> tuple[int, bytes]:
        """Status code and everything the server sent until it closed the connection (within ``timeout``)."""
        data = await asyncio.wait_for(self.reader.read(), timeout)
        if not data:
            return 0, b""
        status_line = data.split(b"\r\n", 1)[0]
        return int(status_line.split()[1]), data

    async def read_status(self, timeout: float) -> int:
        """Status code of the next response (reads only its status line and headers)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        return int(head.split(b"\r\n", 1)[0].split()[1])

    async def reset_by_peer(self, timeout: float) -> bool:
        """Whether the connection ends in a reset within ``timeout`` (reading and discarding data), not in
        an orderly close or not at all."""
        async def drain() -> None:
            while await self.reader.read(65536):
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
        except ConnectionResetError:
            return True
        except TimeoutError:
            pass
        return False

    async def closed_by_peer(self, timeout: float) -> bool:
        """Whether the server closes the connection within ``timeout`` (reading and discarding data)."""
        async def drain() -> None:
            while await self.reader.read(65536):
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


def http_request(
    method: str, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = (), length: bool = True
) -> bytes:
    """The bytes of one HTTP/1.1 request; ``length=False`` leaves Content-Length out."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- an app driven from synchronous code -----------------------------------------------------------


class AppThread:
    """A started app on its own event loop thread, called synchronously with a per-call time limit.

    Hypothesis drives synchronous test functions; this lets each example be a real ASGI request,
    and a request that does not finish within ``limit`` seconds fails the test as a hang.
    """

    def __init__(self, settings: Settings, models: Mapping[str, ServedModel], limit: float = 20.0) -> None:
        self.app = create_app(settings, models)
        self.limit = limit
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="app-thread", daemon=True)
        self._lifespan: contextlib.AbstractAsyncContextManager[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> AppThread:
        self._thread.start()
        self._lifespan = self.app.router.lifespan_context(self.app)
        self._run(self._lifespan.__aenter__(), 60)
        transport = httpx.ASGITransport(app=self.app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=None)
        state = state_of(self.app)
        deadline = time.monotonic() + 30
        while not state.ready:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._lifespan is not None and self._client is not None
        self._run(self._client.aclose(), 10)
        self._run(self._lifespan.__aexit__(None, None, None), 60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; AssertionError when it takes longer than ``limit`` seconds (a hang)."""
        assert self._client is not None

        async def call() -> httpx.Response:
            try:
                return await asyncio.wait_for(self._client.request(method, url, **kwargs), self.limit)  # type: ignore[union-attr]
            except TimeoutError:
                raise AssertionError(f"{method} {url} did not answer within {self.limit} s") from None

        return self._run(call(), self.limit + 10)


@contextlib.contextmanager
def app_thread(settings: Settings, models: Mapping[str, ServedModel], limit: float = 20.0) -> Iterator[AppThread]:
    with AppThread(settings, models, limit) as running:
        yield running


# -- models that fail on purpose ----------------------------------------------------------------------


class FaultyModel(GatedModel):
    """A gated served model whose call raises ``fault(frame counts of the batch)`` when that is not None."""

    def __init__(self, base: ServedModel, fault: Callable[[list[int]], BaseException | None]) -> None:
        super().__init__(base)
        self.fault = fault

    def decode_batch(
        self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        frames = [int(x.shape[-1]) for x in inputs]
        self.calls.append(frames)
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise RuntimeError("test gate never opened")
        error = self.fault(frames)
        if error is not None:
            raise error
        return ServedModel.decode_batch(self, inputs, bandwidth_ids)
