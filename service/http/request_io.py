"""HTTP plumbing shared by the endpoints: bounded body reading, deadlines, disconnects, audio responses."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from service.echo import clip
from service.errors import (
    BodyTimeoutError,
    ClientDisconnectedError,
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from service.http.json_body import JsonBodyError
from service.http.payloads import Payload, body_kind, from_json_error, is_json, load_payload
from service.http.state import ServiceState, state_of
from service.runtime.audio_io import OutputFormat
from service.runtime.models import ServedModel
from service.runtime.serving import Audio
from service.settings import Settings

T = TypeVar("T")

# Bodies this small are parsed on the event loop: a thread hop costs more (audio: INLINE_AUDIO_SAMPLES).
INLINE_BODY_BYTES = 64 * 1024


def service_state(request: Request) -> ServiceState:
    return state_of(request.app)


async def read_payload(request: Request, settings: Settings) -> tuple[bytes, str]:
    """The body of a decode endpoint and its kind, ``"json"`` or ``"npy"`` (sniffed without a
    Content-Type; a sniffed JSON body is held to the JSON limit too)."""
    body = await read_body(request, settings)
    kind = body_kind(request.headers.get("content-type"), body)
    if kind == "json" and len(body) > settings.max_json_body_bytes:  # sniffed JSON, without a Content-Type
        raise PayloadTooLargeError(_body_limit_message(len(body), settings.max_json_body_bytes, json=True))
    return body, kind


async def read_body(request: Request, settings: Settings, too_large_hint: str = "") -> bytes:
    """The whole body, within its limit (``too_large_hint`` ends the 413's message).

    JSON bodies have a limit of their own (``max_json_body_bytes``): parsing JSON holds the
    interpreter, so its size bounds how long the probes may wait, and large inputs go as ``.npy``.
    A body is refused with 413 as soon as it passes its limit (before reading it all), and with 408
    unless it has all arrived ``body_timeout_s`` after the request started: the time limit covers the
    whole body, not the pause between chunks, so a client cannot hold a connection open by dribbling
    a byte now and then. A client that leaves mid-upload is a 499, not a failure of ours.
    """
    _check_content_encoding(request.headers.get("content-encoding"))
    json_limited = settings.max_json_body_bytes < settings.max_body_bytes
    json_declared = json_limited and is_json(request.headers.get("content-type"))
    limit = settings.max_json_body_bytes if json_declared else settings.max_body_bytes
    started = getattr(request.state, "started", None) or time.monotonic()
    remaining = started + settings.body_timeout_s - time.monotonic()
    try:
        return await asyncio.wait_for(_read_limited(request, limit, json_declared, too_large_hint),
                                      max(0.0, remaining))
    except TimeoutError:
        raise BodyTimeoutError(
            f"the request body did not arrive within {settings.body_timeout_s:g} s (VOCOS_BODY_TIMEOUT_S)"
        ) from None
    except ClientDisconnect:
        raise ClientDisconnectedError("the client disconnected while sending its body") from None


def _check_content_encoding(value: str | None) -> None:
    """415 for a compressed body (RFC 7694): read as it is, it would fail to parse with a misleading message."""
    codings = [c.strip().lower() for c in (value or "").split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {clip(value or '')} is not supported; send the body uncompressed"
        )


def declared_length(value: str | None) -> int | None:
    """A ``Content-Length`` value as a number; None when absent or not ASCII digits ("²" is a digit to
    ``str.isdigit`` and no number to ``int``)."""
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


async def _read_limited(request: Request, limit: int, json: bool, hint: str) -> bytes:
    declared = declared_length(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise PayloadTooLargeError(_body_limit_message(declared, limit, json=json) + hint)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(_body_limit_message(size, limit, at_least=True, json=json) + hint)
        chunks.append(chunk)
    return b"".join(chunks)


def _body_limit_message(size: int, limit: int, at_least: bool = False, json: bool = False) -> str:
    more = "at least " if at_least else ""
    if json:
        return (
            f"JSON body of {more}{size} bytes exceeds the JSON limit of {limit} bytes "
            "(VOCOS_MAX_JSON_BODY_BYTES); send large inputs as .npy (application/x-npy)"
        )
    return f"request body of {more}{size} bytes exceeds the limit of {limit} bytes (VOCOS_MAX_BODY_BYTES)"


class Deadline:
    """When a request must be answered: the server's timeout, shortened by ``X-Request-Timeout``."""

    def __init__(self, request: Request, settings: Settings) -> None:
        seconds = settings.request_timeout_s
        header = request.headers.get("x-request-timeout")
        if header is not None:
            try:
                asked = float(header)
            except ValueError:
                asked = math.nan
            if not (asked > 0 and math.isfinite(asked)):
                raise InvalidInputError(
                    f"X-Request-Timeout must be a positive number of seconds, got {clip(header, 40)}"
                )
            seconds = min(seconds, asked)
        started = getattr(request.state, "started", None) or time.monotonic()
        self.at = started + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()


async def off_loop(fn: Callable[..., T], *args: object, inline: bool = False) -> T:
    """``fn(*args)`` in a worker thread (or inline when ``inline``), keeping the event loop free."""
    if inline:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


async def load_body(state: ServiceState, body: bytes, kind: str, deadline: Deadline) -> Payload:
    """The parsed body (``service.http.payloads.load_payload``): small bodies here and now; large ``.npy``
    in a thread; large JSON in the parser process, as JSON parsing holds the interpreter throughout
    and the event loop (with the probes) would wait on it."""
    if len(body) <= INLINE_BODY_BYTES:
        return load_payload(body, kind)
    if kind != "json":
        return await asyncio.to_thread(load_payload, body, kind)
    try:
        return await state.json_parser.load(body, timeout=deadline.remaining())
    except JsonBodyError as exc:
        raise from_json_error(exc) from None


class CutShortError(Exception):
    """What :func:`unless` waited on came first."""


async def unless(stop: Awaitable[object], work: Awaitable[T]) -> T:
    """``work``'s result, unless ``stop`` completes first: then ``work`` is cancelled (dropping it from its
    queue) and :class:`CutShortError` is raised."""
    task, stopper = asyncio.ensure_future(work), asyncio.ensure_future(stop)
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopper):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
    if task.cancelled():
        raise CutShortError
    return task.result()


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it (dropping it from its queue)."""
    try:
        return await unless(_disconnected(request), work)
    except CutShortError:
        raise ClientDisconnectedError("the client disconnected before its audio was ready") from None


async def _disconnected(request: Request) -> None:
    # After the body is read, the server's receive() returns only once the client disconnects.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def audio_headers(seconds: float, sample_rate: int, model: ServedModel, warning: str | None) -> dict[str, str]:
    """The headers of an audio answer, whole or streamed: its duration, rate, model and any input warning."""
    headers = {
        "X-Audio-Duration": f"{seconds:.6f}",
        "X-Model": model.name,
        "X-Model-Source": model.public_name.encode("ascii", "replace").decode("ascii"),
        "X-Sample-Rate": str(sample_rate),
    }
    if warning:  # a header value: ASCII, on one line, bounded
        headers["X-Input-Warning"] = " ".join(warning.split()).encode("ascii", "replace").decode()[:300]
    return headers


def audio_response(audio: Audio, fmt: OutputFormat) -> Response:
    """``audio``'s body, which the vocoder encoded in ``fmt`` while the answer was held in the byte budget
    (``encode=``), with its duration, rate and model in headers."""
    assert audio.encoded is not None, "whole answers are encoded by the vocoder (encode=fmt)"
    headers = audio_headers(audio.seconds, audio.sample_rate, audio.model, audio.warning)
    return Response(audio.encoded, media_type=fmt.media_type, headers=headers)
