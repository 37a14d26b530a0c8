"""The access log: one line per HTTP request and per WebSocket stream, written when it ends, with its
request id (the ``X-Request-Id`` of its answer and of its other log lines), status, duration and size.

It replaces uvicorn's access log, whose lines carry neither the request id nor, in uvicorn's format, a
time. The path and query go through the log's redaction (``service.runtime.logs``) like every record, and
are percent-encoded and clipped first: they are what anyone may send.
"""

from __future__ import annotations

import logging
import urllib.parse

from starlette.types import Scope

from service.runtime.logs import redact_configured

access_log = logging.getLogger("service.access")
# Status recorded for a request whose client left before its answer was complete (nginx's convention).
CLIENT_CLOSED = 499
# The most characters of a path and query an access line shows: a client's query of 60 KB was written whole,
# twice per line in JSON, by anyone (the probes need no key), for each request.
MAX_TARGET_CHARS = 1024
# Kept as sent in a query; anything else, a '"' that would end the quoted request early in a text line
# (forging its status or id) among them, is percent-encoded as nginx escapes it.
_QUERY_SAFE = "!$&'()*+,-./:;=?@_~%[]"
# The most characters of a client's host: an IPv6 address with a zone, or a host name, is far shorter.
_MAX_HOST_CHARS = 256


def log_request(scope: Scope, status: int, seconds: float, body_bytes: int, request_id: str) -> None:
    """``client - "METHOD /path?query HTTP/1.1" status 0.123s 4096B id=...``: ``seconds`` from the request's
    headers to its answer's end, ``body_bytes`` of answer body sent."""
    client, target = _client_and_target(scope)
    method, version = scope.get("method", "-"), scope.get("http_version")
    access_log.info(
        '%s - "%s %s HTTP/%s" %d %.3fs %dB id=%s', client, method, target, version, status, seconds, body_bytes,
        request_id,
        extra={"fields": {"request_id": request_id, "client": client, "method": method,
                          "path": target, "status": status, "duration_s": round(seconds, 6),
                          "bytes": body_bytes}},
    )


def log_stream(scope: Scope, status: int, seconds: float, samples: int, request_id: str) -> None:
    """``client - "WebSocket /stream/mel?query" status 12.345s 96000 samples id=...``: ``status`` 200 for a
    stream that ended as asked, 499 for one its client left, else its error's; ``seconds`` it was open."""
    client, target = _client_and_target(scope)
    access_log.info(
        '%s - "WebSocket %s" %d %.3fs %d samples id=%s', client, target, status, seconds, samples, request_id,
        extra={"fields": {"request_id": request_id, "client": client, "method": "WebSocket",
                          "path": target, "status": status, "duration_s": round(seconds, 6),
                          "samples": samples}},
    )


def _client_and_target(scope: Scope) -> tuple[str, str]:
    """``host:port`` of the client and the quoted path with its query, as uvicorn's access lines had them,
    from any ASGI server's scope: a test client's ``client`` may be ``("testclient", None)`` or absent, which
    uvicorn's own helpers fail on."""
    client = scope.get("client")
    address = "-"
    if isinstance(client, (tuple, list)) and client:
        address = _quoted_host(client[0])
        if len(client) == 2 and isinstance(client[1], int):
            address += f":{client[1]}"
    target = urllib.parse.quote(str(scope.get("path", "")))
    query = scope.get("query_string", b"")
    if query:
        target += "?" + urllib.parse.quote_from_bytes(bytes(query), safe=_QUERY_SAFE)
    return address, _clipped(target)


def _quoted_host(host: object) -> str:
    """The client's host percent-encoded but for what an address or a host name holds: behind a proxy that uvicorn
    trusts (FORWARDED_ALLOW_IPS), the host is what X-Forwarded-For says, so anyone's text, and a text line that
    began with a forged ``1.2.3.4 - "GET /x HTTP/1.1" 200`` was read as that request."""
    return _clipped(urllib.parse.quote(str(host), safe=":[]"), _MAX_HOST_CHARS)


def _clipped(target: str, limit: int = MAX_TARGET_CHARS) -> str:
    """``target`` redacted, then cut to ``limit`` characters with a final ``…``: redacted first, as a key cut
    in two would no longer be recognised, and its first part would be written."""
    target = redact_configured(target)
    return target if len(target) <= limit else target[:limit] + "…"
