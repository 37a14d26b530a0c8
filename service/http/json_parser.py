"""The child process that parses large JSON bodies (``service.http.json_body.serve``), one at a time.

A pipe pair and a lock: the event loop writes the body and reads the arrays back without holding
the interpreter, and the parse itself runs at low priority in a process of its own, so however many
large JSON bodies arrive the probes keep answering. The child starts on first use and again after
it dies or overruns a request's deadline (it is then killed, with that body).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys
from typing import Any

from service.engine import DeadlineExceededError
from service.http.json_body import JsonBodyError

_CHILD = "from service.http.json_body import serve; serve()"


class JsonParser:
    """``await parser.load(body, timeout)`` -> what ``service.http.json_body.load`` returns, from the child."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._child: asyncio.subprocess.Process | None = None

    async def load(self, body: bytes, timeout: float | None = None) -> dict[str, Any] | str:
        """The fields of ``body``; the wait for the child's turn counts against ``timeout`` too."""
        try:
            reply = await asyncio.wait_for(self._load(body), timeout)
        except TimeoutError:
            raise DeadlineExceededError("the request's deadline passed while its JSON body was parsed") from None
        if reply[0] == "error":
            raise JsonBodyError(reply[1], malformed=reply[2])
        if reply[0] == "failed":
            raise RuntimeError(f"the JSON parser process failed: {reply[1]}")
        return reply[1]

    async def _load(self, body: bytes) -> tuple[Any, ...]:
        async with self._lock:
            try:
                return await self._exchange(body)
            except asyncio.CancelledError:  # deadline or client gone mid-exchange: the child holds this body
                self._kill()
                raise
            except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError) as exc:
                self._kill()
                raise RuntimeError(f"the JSON parser process died: {exc!r}") from None

    async def _exchange(self, body: bytes) -> tuple[Any, ...]:
        child = await self._started()
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(len(body).to_bytes(8, "little") + body)
        await child.stdin.drain()
        size = int.from_bytes(await child.stdout.readexactly(8), "little")
        reply: tuple[Any, ...] = pickle.loads(await child.stdout.readexactly(size))  # our own child's output
        return reply

    async def _started(self) -> asyncio.subprocess.Process:
        if self._child is None or self._child.returncode is not None:
            # The child imports this package from wherever the server does.
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            self._child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CHILD, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                # Its failures come back as replies and are logged here; nothing of it bypasses the log's format.
                stderr=asyncio.subprocess.DEVNULL, env=env,
            )
        return self._child

    def _kill(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    async def close(self) -> None:
        child = self._child
        self._kill()
        if child is not None:
            await child.wait()
