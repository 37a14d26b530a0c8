"""Per-request context as plain ASGI middleware: request id, authentication, the byte budget, the
send timeout, metrics, last-resort 500.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which would buffer responses and hide the
client's disconnect from the endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.echo import clip
from service.errors import ForbiddenOriginError, NoSuchStreamError, ServerBusyError, ServiceError
from service.http.access import CLIENT_CLOSED, log_request
from service.http.cors import cors_options, is_preflight, refused_origin, with_cors
from service.http.errors import error_response, logged_error_response
from service.http.pages import PAGE_PATHS
from service.http.request_io import declared_length
from service.http.server import BUSY_MESSAGE, PROBE_PATHS, abort_connection, beyond_connection_cap, client_gone
from service.http.streamed import AnswerBrokeOffError
from service.runtime.metrics import ENDPOINTS, STREAM_ENDPOINTS

if TYPE_CHECKING:
    from service.http.state import ServiceState
    from service.settings import Settings

log = logging.getLogger(__name__)

# The probes, and the browser pages with their static assets (the same files on every server; the
# OpenAPI document they show and every API call still need a key).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"}) | PAGE_PATHS
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# In a decoded path: routes match "/decode/mel\n" as "/decode/mel" (a regex's $ matches before a final
# newline), while the keys, the metrics and a proxy's rules see another path.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Response bodies go out in pieces of this size, each awaited: a client that stops reading then holds
# one piece in the server's write buffer, not the whole response.
SEND_CHUNK_BYTES = 256 * 1024
# An answer sent before its request's body was read to the end (a refusal: 413, 401, 503): uvicorn kept the
# connection alive and read the rest of the body to drop it, until the header timeout closed the connection
# with no word to a client that may have sent its next request on it. As in Go's net/http, a declared body of at
# most this many bytes is still dropped that way, the connection kept; after a longer or chunked one the
# answer says Connection: close, and the close lingers (service.http.server.LINGER_S).
DRAIN_BODY_BYTES = 256 * 1024


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        # CORS (VOCOS_CORS_ORIGINS) inside: a preflight is answered there, after the request id and before
        # any route; the middleware's own error answers get it too (service.http.cors).
        self.cors = cors_options(state.settings)
        self.app = with_cors(app, self.cors)
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._request(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._handshake(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _handshake(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A stream's id and path, checked as a request's (the rest is its route's), and its ``Origin``
        (service.http.cors). A refused handshake gets its error as an HTTP answer with its id, where the server
        can send one (ASGI's denial response; else a bare 403); uvicorn writes its line in the log."""
        request_id = _request_id(scope)
        try:
            _check_path(scope)
            if scope.get("path") not in STREAM_ENDPOINTS:
                raise NoSuchStreamError(f"no stream at {clip(scope.get('path', ''))}; the streams are "
                                        f"{' and '.join(STREAM_ENDPOINTS)} (ws:// or wss://, on the API's host)")
            origin = refused_origin(_header(scope, b"origin"), self.state.settings)
            if origin is not None:
                raise ForbiddenOriginError(f"a page of {clip(origin, 100)} may not open streams: that origin is "
                                           "not in VOCOS_CORS_ORIGINS")
        except ServiceError as exc:
            response = logged_error_response(exc, request_id)
            response.headers["X-Request-Id"] = request_id
            if scope.get("path") in STREAM_ENDPOINTS:  # a path refused for a control character is no endpoint
                self.state.metrics.streams_refused.labels(scope["path"], str(response.status_code)).inc()
            if "websocket.http.response" in (scope.get("extensions") or {}):
                await response(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})  # the server answers 403, with no body
            return
        scope.setdefault("state", {}).update(request_id=request_id)
        await self.app(scope, receive, send)

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        request_id = _request_id(scope)
        scope.setdefault("state", {}).update(request_id=request_id, started=started)
        path = scope.get("path", "")
        # A public answer (a page, an asset, a probe) is a file sent in pieces or a constant, the same for every
        # client: counted per connection, it counted memory that exists once, and some 250 clients without a key
        # that read ReDoc's 1 MB script slowly held the whole budget (every API call 503) for the send timeout.
        held, clock = _HeldBytes(self.state, answer_counted=path not in PUBLIC_PATHS), _BodyClock(scope, started)
        reply = _Reply(scope, send, request_id, held, self.state.settings.send_timeout_s, clock)
        # A preflight is browser protocol, no API call: in the access log, not in the request metrics.
        preflight = self.cors is not None and is_preflight(scope)
        tracked = path in ENDPOINTS and not preflight
        if tracked:
            self.state.metrics.inflight.inc()
        try:
            _check_path(scope)
            _check_framing(scope)
            if beyond_connection_cap(scope) and path not in PROBE_PATHS:
                raise ServerBusyError(BUSY_MESSAGE)
            if not preflight:  # answered by CORSMiddleware, never passed on to a route
                self._authenticate(scope, path)
            # Only the endpoints read a body. A declared one reserved for a page or a probe (public) was held,
            # never read, until its answer went out: four clients without a key declaring the body limit to
            # /docs and reading slowly held the whole budget, and every API call was 503. Elsewhere a body is
            # counted as it is read (_HeldBytes.counting).
            if tracked:
                held.take_declared(scope)
            await self.app(scope, clock.timing(held.counting(receive)), reply.send)
        except ServiceError as exc:  # raised here, before the app: authentication, the byte budget
            await self._answer(logged_error_response(exc, request_id), preflight)(scope, receive, reply.send)
        except SendTimeoutError as exc:
            log.info("request %s %s: %s", request_id, path, exc)
            reply.status = CLIENT_CLOSED
        except AnswerBrokeOffError as exc:  # logged where it broke; the client must see the answer cut short
            reply.status = exc.status
            if abort_connection(scope):
                await asyncio.sleep(0)  # let the transport report the connection lost before we return
        except Exception as exc:
            log.exception("request %s %s failed", request_id, path)
            if not reply.started:
                await self._answer(error_response(exc, request_id), preflight)(scope, receive, reply.send)
            else:  # the answer broke off on our side, not the client's: not a 499
                reply.status = 500
        finally:
            held.release_all()
            if tracked:
                self.state.metrics.inflight.dec()
            self._record(scope, reply, started, clock.body_end, tracked)

    def _record(self, scope: Scope, reply: _Reply, started: float, body_end: float, tracked: bool) -> None:
        """The request's status in the metrics (latency from its body's end) and the access log."""
        path = scope.get("path", "")
        if reply.started and not reply.complete and reply.status < 400:  # an answer the client left half-way
            log.info("request %s %s: the client left before the answer ended", reply.request_id, path)
            reply.status = CLIENT_CLOSED
        ended = time.monotonic()
        if tracked:
            self.state.metrics.observe_request(path, reply.status, ended - body_end)
        if self.state.settings.access_log:
            log_request(scope, reply.status, ended - started, reply.body_bytes, reply.request_id)

    def _answer(self, response: ASGIApp, preflight: bool) -> ASGIApp:
        """An error answer of the middleware's own, with the CORS headers the routes' answers get: without
        them a page sees a CORS failure, not the error. A preflight's error goes as it is (CORSMiddleware
        would answer the preflight instead)."""
        return response if preflight else with_cors(response, self.cors)

    def _authenticate(self, scope: Scope, path: str) -> None:
        if requires_key(path, self.state.settings):
            self.state.auth.check(_header(scope, b"authorization"))


def _check_path(scope: Scope) -> None:
    """Refuse a decoded path with a control character, which the routes would take for another (:data:`_CONTROL`)."""
    if _CONTROL.search(scope.get("path", "")):
        raise ServiceError("the request path holds a control character (a percent-encoded newline?); expected "
                           "one of the service's paths")


def _check_framing(scope: Scope) -> None:
    """Refuse, and close the connection after, a request framed both by Content-Length and by
    Transfer-Encoding: h11 lets the chunked encoding win, while a proxy in front may have framed it by the
    length and sent what follows as the next request (request smuggling; RFC 9112 section 6.1 says close)."""
    names = {name.lower() for name, _ in scope.get("headers", [])}
    if b"content-length" in names and b"transfer-encoding" in names:
        raise ServiceError("a request framed by both Content-Length and Transfer-Encoding is ambiguous (RFC 9112 "
                           "section 6.1); send one of them", {"Connection": "close"})


def requires_key(path: str, settings: Settings) -> bool:
    """Whether a request for ``path`` must carry an API key, when keys are configured."""
    if path in PUBLIC_PATHS:
        return False
    return path != "/metrics" or settings.metrics_require_key


class SendTimeoutError(Exception):
    """The client did not take its response within ``send_timeout_s``; its connection was dropped."""


class _BodyClock:
    """When the request's body had all arrived (its headers' time until then): a request's latency runs from
    there, so that a client's slow upload is not counted as the server's time. And whether what is left of it
    is short enough to be dropped after an early answer with the connection kept (:data:`DRAIN_BODY_BYTES`)."""

    def __init__(self, scope: Scope, started: float) -> None:
        self.body_end = started
        length = declared_length((_header(scope, b"content-length") or "0").strip())
        declared = length if _header(scope, b"transfer-encoding") is None else None
        self.droppable = declared is not None and declared <= DRAIN_BODY_BYTES  # no body at all included
        self.received = False

    def timing(self, receive: Receive) -> Receive:
        async def timed() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                self.body_end = time.monotonic()
                self.received = True
            return message

        return timed

    @property
    def keeps_connection(self) -> bool:
        """Whether an answer sent now may keep the connection (:data:`DRAIN_BODY_BYTES`)."""
        return self.received or self.droppable


class _HeldBytes:
    """This request's share of the server's byte budget (``service.runtime.inflight``)."""

    def __init__(self, state: ServiceState, answer_counted: bool) -> None:
        self.budget = state.inflight
        self.max_body = state.settings.max_body_bytes
        self.size = 0
        self.declared = False
        self.answer_counted = answer_counted

    def take_declared(self, scope: Scope) -> None:
        """Reserve a declared body in full before reading it; a body over the body limit is the
        endpoint's 413, never reserved."""
        length = declared_length(_header(scope, b"content-length"))
        if length is not None and 0 < length <= self.max_body:
            self.declared = True
            self._take(length)

    def counting(self, receive: Receive) -> Receive:
        async def counted() -> Message:
            message = await receive()
            if not self.declared and message["type"] == "http.request":
                self._take(len(message.get("body", b"")))
            return message

        return counted

    def take_answer(self, size: int) -> None:
        """Count ``size`` bytes of the answer's body, which exist already (so beyond the budget too)."""
        if self.answer_counted:
            self.budget.force_take(size)
            self.size += size

    def release_answer(self, size: int) -> None:
        if self.answer_counted:
            self.budget.release(size)
            self.size -= size

    def release_all(self) -> None:
        self.budget.release(self.size)
        self.size = 0

    def _take(self, size: int) -> None:
        if not self.budget.try_take(size):
            raise ServerBusyError(
                f"the server holds {self.budget.held} bytes of requests and responses in flight and takes "
                f"no more than {self.budget.limit} (VOCOS_MAX_INFLIGHT_BYTES); retry shortly"
            )
        self.size += size


class _Reply:
    """The response side: adds the request id, counts the body against the byte budget, and sends it
    in chunks, each bounded by the send deadline, so a client that stops reading is cut off."""

    def __init__(self, scope: Scope, send: Send, request_id: str, held: _HeldBytes, timeout_s: float,
                 body: _BodyClock) -> None:
        self.scope, self._send, self.request_id, self.held, self.body = scope, send, request_id, held, body
        self.timeout_s = timeout_s
        self.deadline = math.inf
        self.status = CLIENT_CLOSED
        self.started = False
        self.complete = False  # the body's last piece went out
        self.body_bytes = 0  # of the body sent

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.started = True
            self.deadline = time.monotonic() + self.timeout_s
            # nosniff: an error body quotes what the client sent, and is JSON, never a page to render as HTML.
            headers = [*message.get("headers", []), (b"x-request-id", self.request_id.encode()),
                       (b"x-content-type-options", b"nosniff")]
            if not self.body.keeps_connection and not any(k.lower() == b"connection" for k, _ in headers):
                headers.append((b"connection", b"close"))
            await self._bounded({**message, "headers": headers})
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            self.held.take_answer(len(body))
            more = message.get("more_body", False)
            for start in range(0, len(body), SEND_CHUNK_BYTES):
                if client_gone(self.scope):  # left mid-answer: the rest would go nowhere (a 499, see _record)
                    return
                last = start + SEND_CHUNK_BYTES >= len(body)
                chunk = body[start : start + SEND_CHUNK_BYTES]
                await self._bounded({"type": "http.response.body", "body": chunk, "more_body": more or not last})
                self.body_bytes += 0 if self.scope.get("method") == "HEAD" else len(chunk)  # uvicorn drops HEAD's
            if not body:
                await self._bounded(message)
            self.complete = not more
            if more:  # a streamed answer's piece has gone to the socket: it no longer holds memory here
                self.held.release_answer(len(body))
        else:
            await self._send(message)

    async def _bounded(self, message: Message) -> None:
        try:
            await asyncio.wait_for(self._send(message), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            if abort_connection(self.scope, reset=True):
                await asyncio.sleep(0)  # let the transport report the connection lost before we return
            raise SendTimeoutError(
                f"the client did not read its response within {self.timeout_s:g} s (VOCOS_SEND_TIMEOUT_S); "
                "connection dropped"
            ) from None

def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-Id`` when it is a sane token, else a fresh one."""
    given = _header(scope, b"x-request-id")
    if given and _REQUEST_ID.fullmatch(given):  # match's "$" would pass a final newline into the header and log
        return given
    return uuid.uuid4().hex
