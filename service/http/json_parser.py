"""The child process that parses large JSON bodies (``service.http.json_body.serve``), one at a time.

A pipe pair and a lock: the event loop writes the body and reads the arrays back without holding
the interpreter, and the parse itself runs at low priority in a process of its own, so however many
large JSON bodies arrive the probes keep answering. The child starts on first use and again after
it dies or overruns a request's deadline (it is then killed, with that body).
"""

from __future__ import annotations

import asyncio
import collections
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
        # The child's last lines on stderr, read as they come (a full pipe would stall it): what a child
        # that died (the kernel's OOM killer aside) said about it, for the error that reports its death.
        self._stderr: collections.deque[str] = collections.deque(maxlen=5)
        self._stderr_reader: asyncio.Task[None] | None = None

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
                raise await self._death(exc) from None

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
                # Its failures come back as replies, logged here; its stderr reaches the log only in the error
                # that reports its death, in the log's own format.
                stderr=asyncio.subprocess.PIPE, env=env,
            )
            self._stderr.clear()
            self._stderr_reader = asyncio.ensure_future(self._read_stderr(self._child))
        return self._child

    async def _death(self, exc: BaseException) -> RuntimeError:
        """The error of a child that died under an exchange (``exc``): its exit status and last words."""
        child = self._child
        self._kill()
        said = ""
        if child is not None:
            code = await child.wait()
            if self._stderr_reader is not None:
                await asyncio.wait([self._stderr_reader], timeout=1)
            said = f" (exit status {code}{': ' if self._stderr else ''}{' | '.join(self._stderr)})"
        return RuntimeError(f"the JSON parser process died: {exc!r}{said}")

    async def _read_stderr(self, child: asyncio.subprocess.Process) -> None:
        assert child.stderr is not None
        async for line in child.stderr:
            self._stderr.append(line.decode(errors="replace").strip()[:300])

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
        if self._stderr_reader is not None:
            await asyncio.wait([self._stderr_reader], timeout=1)
