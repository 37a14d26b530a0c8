"""The one exception of the client: an error answer of the server (HTTP or WebSocket) or a broken exchange."""

from __future__ import annotations

import json
from typing import Any


class VocosClientError(Exception):
    """The server refused or failed a call.

    ``status``: the HTTP status (also for WebSocket errors, whose close code is ``4000 + status``);
    0 when no status came back (the connection broke, or the server's answer was not understood).
    ``error``: the server's error type (``"invalid_input"``, ``"unauthorized"``, ...), or the client's own
    (``"connection"``, ``"protocol"``). ``request_id``: the server's id of the request, when it sent one.
    ``retry_after``: the seconds the server asked the client to wait before trying again (429, 503).
    ``not_sent``: no connection could be made, so the server never saw the call. ``dropped``: the server
    closed the connection without a word of answer (a kept-alive connection it closed as the call went out, or
    a replica that went away).
    """

    def __init__(self, status: int, error: str, message: str, request_id: str | None = None, *,
                 retry_after: float | None = None, not_sent: bool = False, dropped: bool = False) -> None:
        super().__init__(f"{status} {error}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.status = status
        self.error = error
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.not_sent = not_sent
        self.dropped = dropped

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields, not from ``args`` (the formatted text), so that it survives pickling:
        # process pools and multiprocessing send a worker's exception back that way.
        return (_rebuild, (self.status, self.error, self.message, self.request_id, self.retry_after, self.not_sent,
                           self.dropped))


def _rebuild(status: int, error: str, message: str, request_id: str | None, retry_after: float | None,
             not_sent: bool, dropped: bool = False) -> VocosClientError:
    return VocosClientError(status, error, message, request_id, retry_after=retry_after, not_sent=not_sent,
                            dropped=dropped)


def from_http(status: int, body: bytes, request_id: str | None, retry_after: float | None = None) -> VocosClientError:
    """The error of an HTTP answer whose status is not 2xx: the API's ``{"error": {"type", "message",
    "request_id"}}`` body, or the status and the start of whatever else came back."""

    try:
        parsed: Any = json.loads(body)
        detail = parsed["error"]
        return VocosClientError(status, str(detail["type"]), str(detail["message"]),
                                detail.get("request_id") or request_id, retry_after=retry_after)
    except (ValueError, KeyError, TypeError):
        text = body[:300].decode("utf-8", "replace")
        return VocosClientError(status, "http_error", text or f"HTTP {status}", request_id, retry_after=retry_after)


def from_stream(message: dict[str, Any]) -> VocosClientError:
    """The error of a WebSocket ``{"type": "error", "status", "error", "message", "request_id"}`` message."""
    wait = message.get("retry_after")  # a JSON number, or nothing
    return VocosClientError(int(message.get("status") or 0), str(message.get("error") or "error"),
                            str(message.get("message") or ""), message.get("request_id"),
                            retry_after=retry_after(wait) if isinstance(wait, int | float) else None)


def retry_after(value: str | float | None) -> float | None:
    """A ``Retry-After`` in seconds (the header, or a stream error's ``retry_after``); None when absent or an
    HTTP date."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def protocol_error(message: str) -> VocosClientError:
    """The server's answer broke the protocol the client speaks."""
    return VocosClientError(0, "protocol", message)
