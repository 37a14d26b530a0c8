"""The JSON parser process: the same fields as parsing in the server, errors kept apart from failures,
and a fresh child after one dies or overruns a deadline."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from service.engine import DeadlineExceededError
from service.http.json_body import JsonBodyError, load
from service.http.json_parser import JsonParser

pytestmark = pytest.mark.asyncio


async def test_the_child_returns_what_loading_here_returns() -> None:
    parser = JsonParser()
    body = json.dumps({"mel": np.arange(12.0).reshape(3, 4).tolist(), "bandwidth_id": 2}).encode()
    try:
        fields = await parser.load(body, timeout=30)
        assert isinstance(fields, dict) and fields["bandwidth_id"] == 2
        np.testing.assert_array_equal(fields["mel"], load(body)["mel"])  # type: ignore[index]
        assert await parser.load(b"[1, 2]", timeout=30) == "array"  # its JSON type name, as a message says it
        with pytest.raises(JsonBodyError) as malformed:
            await parser.load(b'{"mel": [[NaN]]}', timeout=30)
        assert malformed.value.malformed
        with pytest.raises(JsonBodyError, match="rectangular") as ragged:
            await parser.load(b'{"mel": [[1, 2], [3]]}', timeout=30)
        assert not ragged.value.malformed
    finally:
        await parser.close()


async def test_a_dead_child_fails_its_body_and_the_next_gets_a_fresh_one() -> None:
    parser = JsonParser()
    try:
        await parser.load(b"{}", timeout=30)
        assert parser._child is not None
        parser._child.kill()
        await parser._child.wait()
        assert await parser.load(b'{"a": 1}', timeout=30) == {"a": 1}  # started again before use
        assert parser._child is not None
        parser._child.kill()  # not yet reaped: it dies under the next exchange, which fails
        # -9 (SIGKILL), or 255 when asyncio's child watcher finds the process reaped already
        with pytest.raises(RuntimeError, match=r"died: .*\(exit status -?\d+\)"):
            await parser.load(b'{"a": 2}', timeout=30)
        assert await parser.load(b'{"a": 3}', timeout=30) == {"a": 3}
    finally:
        await parser.close()


async def test_a_deadline_passed_while_parsing_kills_the_child() -> None:
    parser = JsonParser()
    body = json.dumps({"mel": np.zeros((100, 40000)).tolist()}).encode()
    try:
        await parser.load(b"{}", timeout=30)
        with pytest.raises(DeadlineExceededError):
            await parser.load(body, timeout=0.001)
        assert parser._child is None
        assert await parser.load(b'{"ok": true}', timeout=30) == {"ok": True}
    finally:
        await parser.close()


async def test_waiting_for_the_child_counts_against_the_deadline() -> None:
    parser = JsonParser()
    big = json.dumps({"mel": np.zeros((100, 40000)).tolist()}).encode()
    try:
        await parser.load(b"{}", timeout=30)
        first = asyncio.ensure_future(parser.load(big, timeout=60))
        await asyncio.sleep(0.01)  # the big body holds the child
        with pytest.raises(DeadlineExceededError):
            await parser.load(b'{"late": 1}', timeout=0.05)
        fields = await first  # unharmed: the late body never reached the child
        assert isinstance(fields, dict) and fields["mel"].shape == (100, 40000)
    finally:
        await parser.close()


async def test_a_failure_in_the_child_is_a_reply_not_a_traceback_on_its_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's stderr went straight to the server's: a crash printed raw traceback lines into a JSON log.
    A failure is now a reply, which the server raises (a 500, logged once in its own format)."""
    import io
    import pickle
    import sys
    import types

    from service.http import json_body

    def failing(body: bytes) -> dict:
        raise MemoryError("Unable to allocate 373. GiB")

    monkeypatch.setattr(json_body, "load", failing)
    monkeypatch.setattr(json_body.os, "nice", lambda increment: 0)  # not this test process
    sink = io.BytesIO()
    source = io.BytesIO(len(b"{}").to_bytes(8, "little") + b"{}")
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=source))
    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=sink))
    json_body.serve()
    reply = pickle.loads(sink.getvalue()[8:])
    assert reply == ("failed", "MemoryError: Unable to allocate 373. GiB")


async def test_a_child_that_dies_is_reported_with_its_last_words_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its stderr is read as it comes and reaches the log only in the error reporting its death (it went
    straight to the server's stderr, past the log's format)."""
    from service.http import json_parser

    dying = "import sys; sys.stdin.buffer.read(8); sys.stderr.write('boom: cannot allocate\\n'); sys.exit(3)"
    monkeypatch.setattr(json_parser, "_CHILD", dying)
    parser = JsonParser()
    try:
        # 3, or 255 when asyncio's child watcher finds the process reaped already (it logs a warning; a CI run saw it)
        with pytest.raises(RuntimeError, match=r"died: .*\(exit status (3|255): boom: cannot allocate\)"):
            await parser.load(b'{"a": 1}', timeout=30)
    finally:
        await parser.close()
