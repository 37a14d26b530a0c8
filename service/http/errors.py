"""The one place that maps exceptions to HTTP responses: ``{"error": {"type", "message", "request_id"}}``
with the right status code, for ``ServiceError`` (service.errors), the engine's ``EngineError`` and
``vocos_core``'s ``InputError``; and how loudly each is logged.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.echo import clip
from service.engine import (
    BatchFailedError,
    DeadlineExceededError,
    DeviceOutOfMemoryError,
    EngineError,
    EngineStoppedError,
    InvalidItemError,
    QueueFullError,
    StreamLimitError,
)
from service.errors import ServerBusyError, ServiceError
from service.http.query import validation_message
from vocos_core.errors import InputError as CoreInputError

log = logging.getLogger(__name__)


# Engine failures: status code, error type. The engine itself knows nothing of HTTP.
_ENGINE_STATUS: dict[type[EngineError], tuple[int, str]] = {
    QueueFullError: (429, "queue_full"),
    StreamLimitError: (503, "too_many_streams"),
    DeadlineExceededError: (504, "deadline_exceeded"),
    EngineStoppedError: (503, "unavailable"),
    DeviceOutOfMemoryError: (503, "device_out_of_memory"),
    InvalidItemError: (422, "invalid_input"),
    BatchFailedError: (500, "internal"),
}


# The settings behind the engine's limits, named in its messages here: the engine knows no settings.
_ENGINE_SETTING: dict[type[EngineError], str] = {
    QueueFullError: " (VOCOS_MAX_QUEUE_SIZE, or the model's max_queue_size in VOCOS_MODELS_FILE)",
    StreamLimitError: " (VOCOS_MAX_STREAMS)",
    DeadlineExceededError: " (the deadline: VOCOS_REQUEST_TIMEOUT_S, or X-Request-Timeout when shorter)",
}


# The keys of an OpenAPI path item that are operations (the others: parameters, summary, servers...).
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def error_body(error_type: str, message: str, request_id: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": error_type, "message": message, "request_id": request_id}}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def error_response(exc: BaseException, request_id: str) -> JSONResponse:
    """The JSON error response for ``exc``; unknown exceptions become a 500 carrying the request id."""
    status, error_type, message, headers = classify(exc, request_id)
    return JSONResponse(error_body(error_type, message, request_id), status_code=status, headers=headers)


def classify(exc: BaseException, request_id: str) -> tuple[int, str, str, dict[str, str]]:
    """Status code, error type, message and headers of ``exc``: for HTTP responses and WebSocket errors alike."""
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.error_type, exc.message, exc.headers
    if isinstance(exc, EngineError):
        status, error_type = next(v for k, v in _ENGINE_STATUS.items() if isinstance(exc, k))
        headers = {}
        if isinstance(exc, QueueFullError | DeviceOutOfMemoryError | StreamLimitError):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        elif isinstance(exc, EngineStoppedError):  # draining: a retry goes to another replica
            headers["Retry-After"] = "1"
        message = f"{exc}{_ENGINE_SETTING.get(type(exc), '')}"
        if status == 500:
            message = f"{message} (request id {request_id})"
        return status, error_type, message, headers
    if isinstance(exc, CoreInputError):
        return 422, "invalid_input", str(exc), {}
    if isinstance(exc, RequestValidationError):
        return 422, "invalid_parameter", validation_message(exc.errors()), {}
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, "http_error", str(exc.detail), dict(exc.headers or {})
    return 500, "internal", f"internal error; quote request id {request_id} when reporting it", {}


def log_level(exc: BaseException, status: int) -> int:
    """How loud an answered failure is: ours (500) an error; overload a warning; the expected
    outcomes of a drain, a deadline or a client that left, info; the caller's mistakes, debug."""
    if status >= 500 and status not in (503, 504):
        return logging.ERROR
    if isinstance(exc, ServerBusyError | DeviceOutOfMemoryError | QueueFullError | StreamLimitError):
        return logging.WARNING
    if status in (499, 503, 504):
        return logging.INFO
    return logging.DEBUG


def logged_error_response(exc: BaseException, request_id: str) -> JSONResponse:
    """``error_response`` for an expected failure, logged at its ``log_level``."""
    response = error_response(exc, request_id)
    log.log(log_level(exc, response.status_code), "request %s: %d %s", request_id, response.status_code, exc)
    return response


def with_routing_message(exc: StarletteHTTPException, request: Request) -> StarletteHTTPException:
    """Starlette's 404 and 405 say only "Not Found" and "Method Not Allowed": ``exc`` with a message that
    names the method and path asked for and what the server has instead."""
    path = clip(request.url.path)
    if exc.status_code == 404 and exc.detail == "Not Found":
        paths = _api_paths(request)
        bare = request.url.path.rstrip("/")
        near = [p for p in paths if p.split(" ", 1)[1] == bare and bare != request.url.path]
        if near:
            detail = f"no such path {path}; without the trailing slash: {', '.join(near)}"
        else:
            detail = f"no such path {path}; the API's paths: {', '.join(paths)} (GET /docs documents them)"
    elif exc.status_code == 405 and exc.detail == "Method Not Allowed":
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method[:20]} is not allowed on {path}; it takes {allowed or 'no method'}"
    else:
        return exc
    return StarletteHTTPException(exc.status_code, detail, exc.headers)


def _api_paths(request: Request) -> list[str]:
    """``METHOD /path`` of each operation of the OpenAPI document (built once, then cached by FastAPI)."""
    paths = request.app.openapi().get("paths", {})
    return [f"{method.upper()} {path}" for path, item in paths.items() for method in item if method in _METHODS]


def install_error_handlers(app: FastAPI) -> None:
    """Route every expected exception class through ``logged_error_response``."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StarletteHTTPException):
            exc = with_routing_message(exc, request)
        return logged_error_response(exc, request_id_of(request))

    for cls in (ServiceError, EngineError, CoreInputError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(cls, handle)
