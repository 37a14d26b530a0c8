"""``?stream=true`` answers: a WAV whose header already carries the final length, then its samples as
the engine makes them final (chunked transfer; over HTTP/1.0, which has none, framed by the whole WAV's
``Content-Length``, known from the start), so the first bytes of a long decode leave early.

A failure after the headers (the deadline, a failed batch, the drain deadline) cannot change the status
any more: the connection is dropped before the body's end (its last chunk, or its length), which every
HTTP client reports as an incomplete answer, and the request is logged and counted with the failure's own
status.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.errors import InvalidParameterError, NotAcceptableError
from service.http.errors import classify, log_level
from service.http.request_io import audio_headers
from service.runtime.audio_io import OutputFormat, pcm_bytes, wav_file_bytes, wav_header
from service.runtime.serving import StreamedAudio

log = logging.getLogger(__name__)


def check_streamable(fmt: OutputFormat, from_accept: bool = False) -> None:
    """Refuse FLAC for ``stream=true``: 422 when the format parameter asks for it, 406 when ``Accept`` lists
    nothing else (HTTP's answer for an Accept the server cannot meet)."""
    if fmt is not OutputFormat.FLAC:
        return
    if from_accept:
        raise NotAcceptableError("stream=true answers WAV (audio/wav); the Accept header lists only audio/flac, "
                                 "which cannot be streamed")
    raise InvalidParameterError("stream=true answers WAV (format=wav16 or wav32f); FLAC cannot be streamed")


class AnswerBrokeOffError(Exception):
    """A streamed answer failed after its headers went out with 200; ``status`` is the failure's own
    (504 for the deadline...). The middleware drops the connection and counts the request with it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the streamed answer broke off ({status})")
        self.status = status


def streamed_response(audio: StreamedAudio, fmt: OutputFormat, request_id: str) -> StreamingResponse:
    """The WAV of ``audio`` sent as it is produced, with the headers of a whole answer (and over HTTP/1.0 its
    length)."""
    header = wav_header(audio.samples, audio.sample_rate, fmt)
    headers = audio_headers(audio.samples / audio.sample_rate, audio.sample_rate, audio.model, audio.warning)
    return _StreamedWav(audio, _body(audio, header, fmt, request_id), wav_file_bytes(header),
                        media_type=fmt.media_type, headers=headers)


class _StreamedWav(StreamingResponse):
    """Releases the answer's stream and analysis however the response ends: a client gone before the
    body began leaves its audio's chunks unstarted, and their own cleanup never runs."""

    def __init__(self, audio: StreamedAudio, body: AsyncIterator[bytes], length: int, **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self.audio = audio
        self.length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("http_version") == "1.0":
            # No chunked transfer in HTTP/1.0 (what nginx speaks to its upstreams by default): without a length
            # the answer ends where the connection does, and one broken off reads as a complete, shorter WAV.
            self.raw_headers.append((b"content-length", str(self.length).encode()))
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.audio.release()


async def _body(audio: StreamedAudio, header: bytes, fmt: OutputFormat, request_id: str) -> AsyncIterator[bytes]:
    yield header
    try:
        async for chunk in audio.chunks:
            yield pcm_bytes(chunk, fmt)
    except Exception as exc:
        status, _, message, _ = classify(exc, request_id)
        log.log(log_level(exc, status), "request %s: %d %s; the streamed answer broke off after its headers",
                request_id, status, message, exc_info=exc if status == 500 else None)
        raise AnswerBrokeOffError(status) from exc
