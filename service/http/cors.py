"""CORS for browser pages on other origins (``VOCOS_CORS_ORIGINS``), with Starlette's ``CORSMiddleware``.

``RequestContextMiddleware`` places it: inside itself, so that a preflight gets a request id and an access
line and is answered before the API-key check (browsers send no credentials on a preflight, and the
middleware never passes one on to a route); and around the error answers it makes itself (401, 503...),
which would otherwise reach the page as a CORS failure with no body. A WebSocket has no CORS: a
handshake whose ``Origin`` is not allowed is refused instead (cross-site WebSocket hijacking).
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Scope

from service.settings import ANY_ORIGIN, Settings

METHODS = ("GET", "POST", "OPTIONS")
# What a page may send (beside the CORS-safelisted headers), and what it may read of an answer.
REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept", "X-Request-Id", "X-Request-Timeout")
EXPOSED_HEADERS = ("X-Audio-Duration", "X-Model", "X-Model-Source", "X-Sample-Rate", "X-Input-Warning",
                   "X-Request-Id", "Retry-After")
# How long a browser may reuse a preflight's answer (Chromium caps it at 2 h). Its cache is per URL, and
# the query (?model=, format=) is part of the URL.
MAX_AGE_S = 3600


def cors_options(settings: Settings) -> dict[str, Any] | None:
    """``CORSMiddleware``'s options for ``settings``; None when no origin is allowed (no CORS headers at all).
    Never ``allow_credentials``: the API reads its key from the Authorization header a page's script sets,
    not from cookies, so a browser sends nothing of a user's to the API on its own."""
    origins = settings.cors_origin_list
    if not origins:
        return None
    return {"allow_origins": origins, "allow_methods": METHODS, "allow_headers": REQUEST_HEADERS,
            "expose_headers": EXPOSED_HEADERS, "max_age": MAX_AGE_S, "allow_credentials": False}


def with_cors(app: ASGIApp, options: dict[str, Any] | None) -> ASGIApp:
    """``app`` (a route stack, or a response) behind ``CORSMiddleware`` with ``options``; ``app`` itself when None."""
    return app if options is None else CORSMiddleware(app, **options)


def is_preflight(scope: Scope) -> bool:
    """Whether ``scope`` is a CORS preflight, by ``CORSMiddleware``'s own test: ``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``. It answers those itself (200, or 400 for an origin, method or header it
    does not allow) and never passes them on."""
    if scope.get("method") != "OPTIONS":
        return False
    # As sent, not lower-cased: CORSMiddleware's Headers compare the scope's names as they are (ASGI servers send
    # them in lower case), and a request that passed this test but not CORSMiddleware's went on to the routes
    # with no key checked.
    names = {bytes(name) for name, _ in scope.get("headers", [])}
    return b"origin" in names and b"access-control-request-method" in names


def refused_origin(origin: str | None, settings: Settings) -> str | None:
    """A WebSocket handshake's ``Origin`` when CORS is on and it is not allowed, else None: a page on another
    site may open a WebSocket to any server (browsers apply no CORS to it), so the server checks. No
    ``Origin`` is no browser (a browser always sends it on a handshake)."""
    allowed = settings.cors_origin_list
    if origin is None or not allowed or allowed == (ANY_ORIGIN,):
        return None
    return None if origin in allowed else origin
