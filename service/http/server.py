"""How uvicorn runs the app: one ``uvicorn_config(app, settings)`` for the server and its tests.

uvicorn bounds neither the time a client may take to send its request headers nor the number of
open connections, so an idle or slowly-typed connection holds a socket and a file descriptor for
ever. ``BoundedH11Protocol`` adds both bounds to uvicorn's h11 protocol, and gives the app a way to
abort its connection (``abort_connection``) when a client stops reading its response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import uuid
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from service.http.errors import error_body
from service.http.state import state_of
from service.runtime.logs import redact_logs
from service.runtime.models import StartupError
from service.settings import Settings

log = logging.getLogger(__name__)

# uvicorn cancels handlers this long after the drain timeout: by then the engines have answered
# what was still queued with 503, so only a handler stuck outside the engines is cut off.
GRACE_AFTER_DRAIN_S = 5.0
# The answer to a connection beyond ``max_connections``, sent before its request is read (so with a fresh
# request id, as for any request that brings none).
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"x-request-id: %s\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)
BUSY_MESSAGE = "too many open connections (VOCOS_MAX_CONNECTIONS); retry later"
ABORT_EXTENSION = "vocos.abort"
WRITE_BUFFER_EXTENSION = "vocos.write_buffer"
BEYOND_CAP_EXTENSION = "vocos.beyond_cap"
CLIENT_GONE_EXTENSION = "vocos.client_gone"
# Connections kept beyond ``max_connections`` for the probes and the metrics scrape, which must answer when
# the server is merely busy: a liveness probe refused there would have a busy pod restarted, and a failed
# scrape would hide the queue from the autoscaler. On them every other request is answered 503.
PROBE_HEADROOM = 16
# Bytes waiting unsent to a WebSocket client beyond which its pings go unanswered (until it reads).
PONG_BACKLOG_BYTES = 64 * 2**10
# What the probes and scrapes ask for (service.http.middleware answers the rest 503 on those connections).
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# An answer that closes its connection while the client still sends the request's body (a refusal before
# reading it: the byte budget's 503, an ambiguous framing's 400) is followed by a lingering close, as
# nginx's: the end of the answer (FIN), then what the client still sends is read and dropped for up to this
# long. Closed with unread data, the socket would send a reset, and the client's kernel would discard the
# answer it had not read yet: an HTTP client sends its whole body before it reads.
LINGER_S = 5.0
# The largest WebSocket message a stream takes: chunks of frames are tens of kB (1 MiB is 2600 mel frames,
# 28 s of audio), and the WebSocket layer holds a message whole before the stream sees it, outside the byte
# budget, so this, not the body limit (64 MiB by default), bounds what each stream can make the server hold.
STREAM_MESSAGE_BYTES = 2**20


def stream_message_bytes(settings: Settings) -> int:
    """The largest WebSocket message taken under ``settings``: :data:`STREAM_MESSAGE_BYTES`, or less with a
    smaller body limit."""
    return min(settings.max_body_bytes, STREAM_MESSAGE_BYTES)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a cap on open connections.

    The header timer runs from the moment a connection opens, or its previous response ends, until
    the next request's headers are complete; when it fires the connection is closed. A connection
    beyond ``max_connections`` serves the probes and the metrics alone (:data:`PROBE_HEADROOM`);
    beyond those too, it is answered 503 at once and closed, and ``on_refused`` is called. Set the
    class attributes with :func:`bounded_protocol`.
    """

    header_timeout_s: float = 10.0
    max_connections: int = 1024
    on_refused: Callable[[], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._beyond_cap = False
        self.app = _with_extensions(self.app, lambda: self.transport, lambda: self._beyond_cap)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_LingeringClose(transport, self))  # type: ignore[arg-type]
        open_now = len(self.connections)
        if open_now > self.max_connections + PROBE_HEADROOM:
            self._refuse(transport, open_now - 1)
            return
        self._beyond_cap = open_now > self.max_connections
        self._arm_header_timer()

    def _refuse(self, transport: asyncio.Transport, open_before: int) -> None:
        request_id = uuid.uuid4().hex
        log.warning("request %s: refused a connection: %d open (VOCOS_MAX_CONNECTIONS)", request_id, open_before)
        body = json.dumps(error_body("unavailable", BUSY_MESSAGE, request_id)).encode()
        transport.write(_BUSY % (request_id.encode(), len(body), body))
        transport.close()  # the raw transport: at once, not lingering (one too many, answered outside h11)
        if self.on_refused is not None:
            self.on_refused()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are no HTTP request, as every error is answered: a JSON body
        with a request id, logged at DEBUG as a caller's mistake (:class:`UvicornNoise` drops
        uvicorn's own WARNING line)."""
        request_id = uuid.uuid4().hex
        log.debug("request %s: 400 %s", request_id, msg)
        body = json.dumps(error_body("http_error", "malformed HTTP request: expected HTTP/1.1 (RFC 9112)",
                                     request_id)).encode()
        headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None:  # the rest of a body whose request was answered: dropped
            return
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request's headers are complete: the body has its own timeout
            self._disarm_header_timer()

    def handle_websocket_upgrade(self, event: Any) -> None:
        # The connection becomes a WebSocket (a stream): its messages have the stream's idle timeout.
        self._disarm_header_timer()
        if isinstance(self.transport, _LingeringClose):  # a stream closes at once: its request had no body
            self.transport = self.transport.raw
        if self._beyond_cap:  # a stream is no probe
            self._refuse(self.transport, len(self.connections) - 1)
            return
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        if self.cycle is cycle and not self.transport.is_closing():  # no pipelined request started
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def linger(self, transport: asyncio.Transport) -> bool:
        """Begin a lingering close of ``transport`` (:data:`LINGER_S`) when the client may still be sending a
        body; False when a plain close will do."""
        # SEND_BODY: the body was not read; ERROR: h11 failed on it (a body framed both ways that is no chunked
        # body), and its 400 is being sent with the rest unread.
        if self.conn.their_state not in (h11.SEND_BODY, h11.ERROR) or transport.is_closing() \
                or not transport.can_write_eof():
            return False
        transport.write_eof()  # after what is buffered: the answer reaches the client whole, then its end
        transport.resume_reading()  # uvicorn pauses reading a body that no one reads
        self._linger_timer = self.loop.call_later(LINGER_S, transport.close)
        return True

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.debug("closed a connection: no complete request headers within %g s", self.header_timeout_s)
            self.transport.close()


class _LingeringClose:
    """A connection's transport whose ``close`` lingers (:meth:`BoundedH11Protocol.linger`) while the client
    still sends a body; a second ``close`` (a shutdown) closes at once. The rest is the transport's."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedH11Protocol) -> None:
        self.raw, self._protocol = transport, protocol
        self._lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def is_closing(self) -> bool:
        return self._lingering or self.raw.is_closing()

    def close(self) -> None:
        if not self._lingering and self._protocol.linger(self.raw):
            self._lingering = True
            return
        self.raw.close()


class AbortableWSProtocol(WSProtocol):
    """uvicorn's wsproto protocol, giving the app ``abort_connection`` too: a stream whose client stops
    reading its audio is dropped (service.http.websocket); and answering pings only while its client reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = _with_extensions(self.app, lambda: self.transport, lambda: False)

    def handle_close(self, event: Any) -> None:
        # wsproto reports frames it cannot parse (a text message that is no UTF-8: 1007; broken framing, such as a
        # continuation with no message begun or a reserved bit set: 1002) as a close from the client, in state
        # OPEN, which no close frame leaves; uvicorn then drops the connection without one, and the client sees
        # 1006 with no reason. RFC 6455 7.1.7: fail the connection with a close frame that says why.
        if self.conn.state is ConnectionState.OPEN and not self.transport.is_closing():
            self.transport.write(self.conn.send(CloseConnection(code=event.code, reason=event.reason)))
        super().handle_close(event)

    def handle_ping(self, event: Any) -> None:
        # RFC 6455 5.5.3 lets an endpoint answer only the latest of the pings it has not answered yet: while
        # what it sent waits unread, a client that pings and reads nothing would fill memory with pongs.
        if self.transport.get_write_buffer_size() <= PONG_BACKLOG_BYTES:
            super().handle_ping(event)


def _with_extensions(inner: Any, transport: Callable[[], asyncio.Transport], beyond_cap: Callable[[], bool]) -> Any:
    """``inner`` with the connection's abort, write-buffer size and place beyond the connection cap in every
    scope's extensions (:func:`abort_connection`, :func:`unsent_bytes`, :func:`beyond_connection_cap`)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.setdefault("extensions", {})
        extensions[ABORT_EXTENSION] = lambda reset=False: _reset(transport()) if reset else transport().abort()
        extensions[WRITE_BUFFER_EXTENSION] = transport().get_write_buffer_size
        extensions[BEYOND_CAP_EXTENSION] = beyond_cap()
        extensions[CLIENT_GONE_EXTENSION] = lambda: _raw(transport()).is_closing()
        await inner(scope, receive, send)

    return app


class UvicornNoise(logging.Filter):
    """Drops uvicorn's WARNING for each request that is no HTTP: a caller's mistake, which
    :meth:`BoundedH11Protocol.send_400_response` answers and logs at DEBUG; and uvicorn's line for each
    WebSocket handshake accepted, which the service's access line for the stream (``service.http.access``)
    replaces when it ends. uvicorn's line for a handshake refused before that (an unknown path) stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == '%s - "WebSocket %s" [accepted]':
            return False
        return record.getMessage() != "Invalid HTTP request received."


def _reset(transport: asyncio.Transport) -> None:
    """Drop the connection with a reset: ``abort`` alone discards only what asyncio still buffers, and the
    kernel would go on holding (and trying to deliver) what fills the socket's send buffer, megabytes, to
    a client that reads nothing, for a minute or more. A zero linger time makes the close discard it too."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def bounded_protocol(settings: Settings, on_refused: Callable[[], None] | None = None) -> type[BoundedH11Protocol]:
    """:class:`BoundedH11Protocol` with the header timeout and connection cap of ``settings``."""
    return type(
        "ServiceH11Protocol",
        (BoundedH11Protocol,),
        {"header_timeout_s": settings.header_timeout_s, "max_connections": settings.max_connections,
         "on_refused": staticmethod(on_refused) if on_refused is not None else None},
    )


def bound_sockets(host: str, port: int) -> list[socket.socket]:
    """The server's sockets, bound as asyncio's ``create_server`` (uvicorn's) binds them: one per address
    ``host`` resolves to ("" is every interface, IPv4 and IPv6; an IPv6 socket takes IPv6 alone), but not
    listening yet. A port in use or an address that is not this machine's is then found before minutes of
    loading models, and connections made during the load are refused rather than left waiting. The port is
    checked, not held: another server with SO_REUSEADDR may still bind it meanwhile (then :mod:`service`
    fails to listen, in one line). Raises StartupError."""
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise StartupError(f"VOCOS_HOST (--host) {host!r} is no address this machine can listen on ({exc})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):  # once each, in the resolver's order
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise StartupError(f"cannot listen on {host or '*'}:{port} (VOCOS_HOST, VOCOS_PORT): {exc.strerror or exc}"
                           ) from None
    return sockets


def uvicorn_config(app: Starlette, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of ``app`` (``create_app``'s) under ``settings``; ``overrides`` for tests."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "lifespan": "on",
        # uvicorn's records go to the root logger's one handler (service.runtime.logs), in the service's
        # format; the access lines are the service's own (service.http.access), with the request id.
        "log_config": None,
        "access_log": False,
        "http": bounded_protocol(settings, state_of(app).metrics.connections_refused.inc),
        "timeout_graceful_shutdown": settings.drain_timeout_s + GRACE_AFTER_DRAIN_S,
        "timeout_keep_alive": min(5.0, settings.header_timeout_s),
        # Streams (service.http.websocket) over wsproto, whichever WebSocket packages are installed.
        "ws": AbortableWSProtocol,
        # Float frames and audio do not compress; permessage-deflate on every message took most of the
        # event loop's time under 24 streams (docs/streaming.md), so it is never negotiated.
        "ws_per_message_deflate": False,
        "ws_max_size": stream_message_bytes(settings),
    }
    config = uvicorn.Config(app, **{**options, **overrides})
    redact_logs(settings.api_key_list)  # after uvicorn.Config, which sets up uvicorn's handlers
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, UvicornNoise) for f in errors.filters):
        errors.addFilter(UvicornNoise())
    return config


def abort_connection(scope: Scope, reset: bool = False) -> bool:
    """Drop the connection of ``scope`` at once, discarding what it still has to send; False when the
    server offers no way to (another ASGI server). ``reset``: for a client that reads nothing, discard
    what the kernel holds for it too (:func:`_reset`); else the client still reads what was sent, then
    sees the answer end short."""
    abort = scope.get("extensions", {}).get(ABORT_EXTENSION)
    if abort is None:
        return False
    abort(reset)
    return True


def client_gone(scope: Scope) -> bool:
    """Whether the connection of ``scope`` has closed under the answer being sent (the client left, or it
    was dropped); False when the server does not say. uvicorn takes what is sent after that without a word,
    so an answer the client left half-way would otherwise count as sent whole."""
    gone = scope.get("extensions", {}).get(CLIENT_GONE_EXTENSION)
    return bool(gone()) if gone is not None else False


def _raw(transport: asyncio.Transport) -> asyncio.Transport:
    """The socket's own transport under a :class:`_LingeringClose` (whose lingering is no client leaving)."""
    return transport.raw if isinstance(transport, _LingeringClose) else transport


def beyond_connection_cap(scope: Scope) -> bool:
    """Whether the connection of ``scope`` opened beyond VOCOS_MAX_CONNECTIONS, in the probes' headroom."""
    return bool(scope.get("extensions", {}).get(BEYOND_CAP_EXTENSION, False))


def unsent_bytes(scope: Scope) -> int:
    """Bytes the connection of ``scope`` has been given and not yet written to its socket (0 when the server
    does not say). Below its buffer's high-water mark uvicorn's WebSocket sends return at once, so this is how a
    stream sees its client lag."""
    size = scope.get("extensions", {}).get(WRITE_BUFFER_EXTENSION)
    return int(size()) if size is not None else 0
