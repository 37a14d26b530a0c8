"""Per-request context as plain ASGI middleware: request id, authentication, metrics, last-resort 500.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which would buffer responses and hide the
client's disconnect from the endpoint.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError, error_response
from service.metrics import ENDPOINTS
from service.pages import PAGE_PATHS

if TYPE_CHECKING:
    from service.settings import Settings
    from service.state import ServiceState

log = logging.getLogger(__name__)

# The probes, and the browser pages with their static assets (the same files on every server; the
# OpenAPI document they show and every API call still need a key).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"}) | PAGE_PATHS
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Status recorded for a request whose client left before any response started (nginx's convention).
CLIENT_CLOSED = 499


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        request_id = _request_id(scope)
        scope.setdefault("state", {}).update(request_id=request_id, started=started)
        path = scope.get("path", "")
        status = CLIENT_CLOSED
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())],
                }
            await send(message)

        tracked = path in ENDPOINTS
        if tracked:
            self.state.metrics.inflight.inc()
        try:
            self._authenticate(scope, path)
            await self.app(scope, receive, send_with_id)
        except ServiceError as exc:  # raised here, before the app: authentication
            await error_response(exc, request_id)(scope, receive, send_with_id)
        except Exception as exc:
            log.exception("request %s %s failed", request_id, path)
            if not response_started:
                await error_response(exc, request_id)(scope, receive, send_with_id)
        finally:
            if tracked:
                self.state.metrics.inflight.dec()
                self.state.metrics.observe_request(path, status, time.monotonic() - started)

    def _authenticate(self, scope: Scope, path: str) -> None:
        if requires_key(path, self.state.settings):
            self.state.auth.check(_header(scope, b"authorization"))


def requires_key(path: str, settings: Settings) -> bool:
    """Whether a request for ``path`` must carry an API key, when keys are configured."""
    if path in PUBLIC_PATHS:
        return False
    return path != "/metrics" or settings.metrics_require_key


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-Id`` when it is a sane token, else a fresh one."""
    given = _header(scope, b"x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex
