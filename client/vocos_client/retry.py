"""When the client tries a call again: the server said "not now" (429, 502, 503), no connection could be
made, or the server closed the connection without a word of answer; and the wait it asks for is short.

Every call of the API is a pure function of its input, so trying again cannot do anything twice. What is
not retried: an answer that says the input is wrong (4xx but 429), a deadline (504) or a failed batch
(500), a read that timed out (the server may still be computing it: a retry would double its work), a
wait longer than ``max_wait_s`` (the caller decides then), and a stream once its start message came.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import VocosClientError

# 429 queue full, 503 draining / too many streams or connections / out of memory alone, 502 a proxy in
# front of a replica that went away (a rolling update).
RETRY_STATUSES = frozenset({429, 502, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """``retries``: tries after the first; ``max_wait_s``: the longest wait a retry may take (a server's
    ``Retry-After`` beyond it ends the retries); ``backoff_s``: the first wait when the server names none,
    doubled each time, with jitter so that refused clients do not all come back at once."""

    retries: int = 2
    max_wait_s: float = 20.0
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if self.retries < 0 or self.max_wait_s < 0 or self.backoff_s < 0:
            raise ValueError(f"retries, max_wait_s and backoff_s must be >= 0, got {self}")

    def wait(self, error: VocosClientError, attempt: int) -> float | None:
        """Seconds to wait before trying again after try number ``attempt`` (0 = the first) failed with
        ``error``; None: give up and raise it."""
        if attempt >= self.retries or not retryable(error):
            return None
        if error.retry_after is not None:
            # Up to 10 % later than asked, so the clients the server refused together come back spread.
            return error.retry_after * (1 + 0.1 * random.random()) if error.retry_after <= self.max_wait_s else None
        # 2.0, not 2: int ** int is Any to a type checker (a negative power is a float), an error under --strict.
        return min(self.max_wait_s, self.backoff_s * 2.0**attempt) * (0.5 + 0.5 * random.random())


def retryable(error: VocosClientError) -> bool:
    """The server refused for now, the call never reached it, or the connection closed with no answer."""
    return error.status in RETRY_STATUSES or error.not_sent or error.dropped


T = TypeVar("T")


def call(policy: RetryPolicy, attempt: Callable[[], T]) -> T:
    """``attempt()``, tried again while ``policy`` says so; the last error is raised."""
    for n in itertools.count():
        try:
            return attempt()
        except VocosClientError as exc:
            wait = policy.wait(exc, n)
            if wait is None:
                raise
        time.sleep(wait)
    raise AssertionError("unreachable")


async def acall(policy: RetryPolicy, attempt: Callable[[], Awaitable[T]]) -> T:
    """As :func:`call`, for a coroutine function."""
    for n in itertools.count():
        try:
            return await attempt()
        except VocosClientError as exc:
            wait = policy.wait(exc, n)
            if wait is None:
                raise
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")
