"""Helpers of the WebSocket stream tests: reading a stream's audio, its final message and its close code."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from service.testing import npy_bytes


def collect(ws: WebSocketTestSession, dtype: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Audio messages until the final text message (done or error)."""
    pieces = []
    while True:
        message = ws.receive()
        if message.get("bytes") is not None:
            pieces.append(np.frombuffer(message["bytes"], dtype))
        elif message.get("text") is not None:
            return (np.concatenate(pieces) if pieces else np.zeros(0, dtype)), json.loads(message["text"])
        else:
            raise AssertionError(f"unexpected message {message}")


def stream_through(ws: WebSocketTestSession, grid: np.ndarray, size: int, dtype: str) -> tuple[np.ndarray, dict]:
    start = json.loads(ws.receive_text())
    assert start["type"] == "start"
    for t in range(0, grid.shape[1], size):
        ws.send_bytes(npy_bytes(grid[:, t:t + size]))
    ws.send_text(json.dumps({"type": "end"}))
    return collect(ws, dtype)


def error_of(ws: WebSocketTestSession) -> tuple[dict[str, Any], int]:
    """The error message and the close code that follows it."""
    while True:
        message = ws.receive()
        if message.get("text") and json.loads(message["text"])["type"] == "error":
            error = json.loads(message["text"])
            break
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    return error, closed.value.code
