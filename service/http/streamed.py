"""``?stream=true`` answers: a WAV whose header already carries the final length, then its samples as
the engine makes them final (chunked transfer), so the first bytes of a long decode leave early."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from service.errors import InvalidInputError
from service.runtime.audio_io import OutputFormat, pcm_bytes, wav_header
from service.runtime.serving import StreamedAudio


def check_streamable(fmt: OutputFormat) -> None:
    if fmt is OutputFormat.FLAC:
        raise InvalidInputError("stream=true answers WAV (format=wav16 or wav32f); FLAC cannot be streamed")


def streamed_response(audio: StreamedAudio, fmt: OutputFormat) -> StreamingResponse:
    """The WAV of ``audio`` sent as it is produced, with the headers of a whole answer."""
    headers = {
        "X-Audio-Duration": f"{audio.samples / audio.sample_rate:.6f}",
        "X-Model": audio.model.name,
        "X-Model-Source": audio.model.public_name.encode("ascii", "replace").decode("ascii"),
        "X-Sample-Rate": str(audio.sample_rate),
    }
    if audio.warning:
        headers["X-Input-Warning"] = " ".join(audio.warning.split()).encode("ascii", "replace").decode()[:300]
    return StreamingResponse(_body(audio, fmt), media_type=fmt.media_type, headers=headers)


async def _body(audio: StreamedAudio, fmt: OutputFormat) -> AsyncIterator[bytes]:
    yield wav_header(audio.samples, audio.sample_rate, fmt)
    async for chunk in audio.chunks:
        yield pcm_bytes(chunk, fmt)
