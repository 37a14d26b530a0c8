"""``?stream=true`` answers: a WAV whose header already carries the final length, then its samples as
the engine makes them final (chunked transfer), so the first bytes of a long decode leave early."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from service.errors import InvalidInputError
from service.http.request_io import audio_headers
from service.runtime.audio_io import OutputFormat, pcm_bytes, wav_header
from service.runtime.serving import StreamedAudio


def check_streamable(fmt: OutputFormat) -> None:
    if fmt is OutputFormat.FLAC:
        raise InvalidInputError("stream=true answers WAV (format=wav16 or wav32f); FLAC cannot be streamed")


def streamed_response(audio: StreamedAudio, fmt: OutputFormat) -> StreamingResponse:
    """The WAV of ``audio`` sent as it is produced, with the headers of a whole answer."""
    headers = audio_headers(audio.samples / audio.sample_rate, audio.sample_rate, audio.model, audio.warning)
    return StreamingResponse(_body(audio, fmt), media_type=fmt.media_type, headers=headers)


async def _body(audio: StreamedAudio, fmt: OutputFormat) -> AsyncIterator[bytes]:
    yield wav_header(audio.samples, audio.sample_rate, fmt)
    async for chunk in audio.chunks:
        yield pcm_bytes(chunk, fmt)
