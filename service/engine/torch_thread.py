"""The one thread that runs this process's model work: every engine's calls, model loading, warm-up,
audio analysis.

PyTorch splits a CPU operator over an OpenMP team that belongs to the calling thread. libgomp lets a
team's idle threads spin for the next operator only while the process has no more OpenMP threads
than CPUs; beyond that they sleep after ~100 spins and every operator wakes them through the kernel.
A second thread that had ever run torch (models loaded in a helper thread, a second engine) thus
made each stream step about 1.7 times slower on 2 cores (docs/streaming.md), so all of it runs here,
one call at a time, as the CPU would run it anyway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
# How long a thread that wants the interpreter waits before the thread holding it must let go (CPython's
# switch interval, 5 ms by default). The model thread lets go of the GIL in every operator and takes it
# back to start the next, some 850 times a stream step; whenever the event loop is running Python then
# (WebSocket messages, metrics, logs), the model thread waited up to 5 ms for each, its OpenMP worker
# spinning on the other core meanwhile. Streams near the CPU's limit fell behind real time far more often
# (docs/streaming.md); whole requests were as fast either way.
GIL_SWITCH_INTERVAL_S = 0.0005


def hand_over_promptly() -> None:
    """Make the interpreter pass between threads within :data:`GIL_SWITCH_INTERVAL_S` (process-wide); the
    server calls it at start."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def torch_thread() -> ThreadPoolExecutor:
    """The process's model-work thread (made on first use, shared by every app in the process)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vocos-torch")
        return _executor


async def run_in_torch_thread(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in :func:`torch_thread`; cancelling the caller drops a call that has not started."""
    return await asyncio.get_running_loop().run_in_executor(torch_thread(), fn, *args)


@dataclass(frozen=True)
class Timed(Generic[T]):
    """What a call in the model thread returned, when the thread began it, and how long it ran there: the
    engines share the thread, so a call's time from the event loop includes waiting behind another's."""

    value: T
    started: float  # time.monotonic()
    seconds: float


class ThreadCallError(Exception):
    """``error``, raised by a call in the model thread after it ran there ``seconds`` from ``started``."""

    def __init__(self, error: Exception, started: float, seconds: float) -> None:
        super().__init__(str(error))
        self.error, self.started, self.seconds = error, started, seconds


async def timed_in_torch_thread(fn: Callable[..., T], *args: object) -> Timed[T]:
    """:func:`run_in_torch_thread`, timed in the thread. Any failure raises :class:`ThreadCallError` (``from``
    its error): a call that raised, with its compute time, or one the thread could not run, with none."""

    def timed() -> Timed[T]:
        started = time.monotonic()
        try:
            value = fn(*args)
        except Exception as exc:
            raise ThreadCallError(exc, started, time.monotonic() - started) from exc
        return Timed(value, started, time.monotonic() - started)

    try:
        return await run_in_torch_thread(timed)
    except ThreadCallError:
        raise
    except Exception as exc:
        raise ThreadCallError(exc, time.monotonic(), 0.0) from exc


def idle_within(seconds: float) -> bool:
    """Whether the model thread finishes what it runs (and has queued) within ``seconds``."""
    try:
        torch_thread().submit(int).result(timeout=seconds)
    except concurrent.futures.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        return False
    return True
