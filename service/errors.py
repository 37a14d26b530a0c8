"""The service's own failures, each with its status code and error type; nothing here knows of HTTP
frameworks (``service.http.errors`` turns these, the engine's and ``vocos_core``'s into responses).

Request handling raises ``ServiceError`` subclasses (the caller's mistakes, and the server's limits);
the engine raises its own ``EngineError`` subclasses; ``vocos_core`` raises ``InputError``.
"""

from __future__ import annotations

import re

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class ServiceError(Exception):
    """A failure with a fixed status code; the message says what was expected."""

    status_code = 400
    error_type = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class MalformedPayloadError(ServiceError):
    """The body cannot be parsed at all (broken JSON, not a .npy file, undecodable audio)."""

    status_code = 400
    error_type = "malformed_payload"


class UnauthorizedError(ServiceError):
    status_code = 401
    error_type = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class ForbiddenOriginError(ServiceError):
    """A stream's handshake from a browser page whose origin ``VOCOS_CORS_ORIGINS`` does not list."""

    status_code = 403
    error_type = "forbidden_origin"


class ModelNotLoadedError(ServiceError):
    """The endpoint's model is disabled in this server's settings."""

    status_code = 404
    error_type = "model_not_loaded"


class NotAcceptableError(ServiceError):
    status_code = 406
    error_type = "not_acceptable"


class BodyTimeoutError(ServiceError):
    """The body did not arrive in time (a stalled or deliberately slow upload); the connection is closed."""

    status_code = 408
    error_type = "body_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Connection": "close"})


class PayloadTooLargeError(ServiceError):
    """The body or the audio exceeds a configured limit; the message states the limit."""

    status_code = 413
    error_type = "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    error_type = "unsupported_media_type"


class InvalidParameterError(ServiceError):
    """A query parameter the endpoint does not take, or a value of the wrong type or range."""

    status_code = 422
    error_type = "invalid_parameter"


class InvalidInputError(ServiceError):
    """Parsed fine but not valid: dtype, rank, shape, value range, bandwidth."""

    status_code = 422
    error_type = "invalid_input"


class NoSuchStreamError(ServiceError):
    """A WebSocket handshake to a path that is no stream (a base URL with a wrong path): Starlette refused it
    with a bare 403, which says the client is not allowed rather than that the path is wrong. Its type is the
    HTTP API's for a path it does not have."""

    status_code = 404
    error_type = "http_error"


class UpgradeRequiredError(ServiceError):
    """A plain HTTP request to a WebSocket stream (as from a proxy that drops the Upgrade header): the router's
    404 said the path was wrong."""

    status_code = 426
    error_type = "upgrade_required"


class ServerDrainingError(ServiceError):
    """The server is shutting down: requests that arrive after the drain began are refused. Retry-After: a
    retry soon goes to another replica (the load balancer takes this one out)."""

    status_code = 503
    error_type = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": "1"})


class ServerBusyError(ServiceError):
    """The server holds as many request and response bytes as it may (VOCOS_MAX_INFLIGHT_BYTES)."""

    status_code = 503
    error_type = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": "1", "Connection": "close"})


class ClientDisconnectedError(ServiceError):
    """The client went away before its audio was ready (nginx's 499; never actually delivered)."""

    status_code = 499
    error_type = "client_disconnected"


class AudioPathUnavailableError(ServiceError):
    """The model's audio-in path cannot run yet (the EnCodec weights are not on the server); each
    request retries loading them, so it works once they are present, without a restart."""

    status_code = 503
    error_type = "audio_path_unavailable"


def without_addresses(text: str) -> str:
    """``text`` without the memory addresses of object reprs (``<ast.BinOp object at 0x7f...>``)."""
    return _ADDRESS.sub("", text)


def beyond(value: float, limit: float) -> str:
    """``value`` with the fewest decimals (at least one) that still show it above ``limit``: a message
    that says "2.0 s; at most 2 s" of 2.005 s would not say what was wrong."""
    for decimals in range(1, 7):
        text = f"{value:.{decimals}f}"
        if float(text) > limit:
            return text
    return repr(value)
