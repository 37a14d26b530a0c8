"""Audio in and out: decode uploads to 24 kHz mono float32, encode results as WAV or FLAC.

Decoding uses libsndfile (WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3) through soundfile and soxr for
resampling. The duration limit is checked against the header before decoding, and decoding itself
stops one frame past the limit, so a file that lies in its header cannot make us decode hours.
"""

from __future__ import annotations

import enum
import io
import math
from typing import NoReturn

import numpy as np
import soundfile as sf
import soxr

from service.errors import (
    InvalidInputError,
    MalformedPayloadError,
    NotAcceptableError,
    PayloadTooLargeError,
)

AUDIO_TYPES = frozenset(
    {
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/vnd.wave",
        "audio/flac",
        "audio/x-flac",
        "audio/ogg",
        "audio/opus",
        "application/ogg",
        "audio/mpeg",
        "audio/mp3",
        "application/octet-stream",
    }
)
SUPPORTED_FORMATS_TEXT = "WAV, FLAC, OGG/Vorbis, OGG/Opus or MP3"


class OutputFormat(str, enum.Enum):
    """Encodings of the returned audio (query parameter ``format``)."""

    WAV16 = "wav16"
    WAV32F = "wav32f"
    FLAC = "flac"

    @property
    def media_type(self) -> str:
        return "audio/flac" if self is OutputFormat.FLAC else "audio/wav"


_SUBTYPES = {
    OutputFormat.WAV16: ("WAV", "PCM_16"),
    OutputFormat.WAV32F: ("WAV", "FLOAT"),
    OutputFormat.FLAC: ("FLAC", "PCM_16"),
}
_ACCEPT = {
    "audio/wav": OutputFormat.WAV16,
    "audio/x-wav": OutputFormat.WAV16,
    "audio/wave": OutputFormat.WAV16,
    "audio/flac": OutputFormat.FLAC,
    "audio/x-flac": OutputFormat.FLAC,
    "audio/*": OutputFormat.WAV16,
    "*/*": OutputFormat.WAV16,
}


def choose_format(requested: OutputFormat | None, accept: str | None) -> OutputFormat:
    """The ``format`` query parameter if given, else the first audio type of ``Accept``, else 16-bit WAV."""
    if requested is not None:
        return requested
    if not accept or not accept.strip():
        return OutputFormat.WAV16
    ranked = []
    for position, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        quality = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if fields[0].lower() in _ACCEPT and quality > 0:
            ranked.append((-quality, position, _ACCEPT[fields[0].lower()]))
    if not ranked:
        raise NotAcceptableError(
            f"cannot produce any type in Accept: {accept!r}; available: audio/wav, audio/flac"
            " (or the format query parameter: wav16, wav32f, flac)"
        )
    return min(ranked)[2]


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: OutputFormat) -> bytes:
    """Encode mono float32 ``samples`` ``(S,)``; integer formats clip to [-1, 1] first."""
    container, subtype = _SUBTYPES[fmt]
    if subtype == "PCM_16":
        samples = np.clip(samples, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def decode_audio(body: bytes, target_rate: int, max_seconds: float) -> np.ndarray:
    """Decode an audio file to mono float32 ``(S,)`` at ``target_rate``.

    Raises MalformedPayloadError (undecodable), InvalidInputError (empty, NaN) or PayloadTooLargeError
    (longer than ``max_seconds``).
    """
    if not body:
        raise InvalidInputError(
            f"the request body is empty; expected an audio file ({SUPPORTED_FORMATS_TEXT})"
        )
    try:
        with sf.SoundFile(io.BytesIO(body)) as audio_file:
            rate = int(audio_file.samplerate)
            limit = math.floor(max_seconds * rate)
            # libsndfile reports 0 or a huge count when the header does not know the length.
            if 0 < audio_file.frames < 2**62 and audio_file.frames > limit:
                _too_long(audio_file.frames / rate, max_seconds)
            data = audio_file.read(frames=limit + 1, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise MalformedPayloadError(
            f"could not decode the audio file; expected {SUPPORTED_FORMATS_TEXT} ({exc})"
        ) from None
    if data.shape[0] > limit:
        _too_long(data.shape[0] / rate, max_seconds, at_least=True)
    if data.shape[0] == 0:
        raise InvalidInputError("the audio file contains no samples")
    mono = data.mean(axis=1, dtype=np.float32)  # mix channels (S, channels) -> (S,)
    if not np.isfinite(mono).all():
        raise InvalidInputError("the audio file contains NaN or Inf samples")
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono)


def _too_long(seconds: float, max_seconds: float, at_least: bool = False) -> NoReturn:
    more = "more than " if at_least else ""
    raise PayloadTooLargeError(
        f"the audio lasts {more}{seconds:.1f} s; this server accepts at most {max_seconds:g} s per request"
        " (VOCOS_MAX_AUDIO_SECONDS)"
    )
