"""Audio in and out: decode uploads to 24 kHz mono float32, encode results as WAV or FLAC.

Decoding uses libsndfile (WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3) through soundfile and soxr for
resampling. The duration limit is checked against the header before decoding, and decoding itself
stops one block past the limit, so a file that lies in its header cannot make us decode hours.
"""

from __future__ import annotations

import enum
import io
import math
import re
import struct
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import soundfile as sf
import soxr

from service.echo import clip
from service.errors import (
    InvalidInputError,
    InvalidParameterError,
    MalformedPayloadError,
    NotAcceptableError,
    PayloadTooLargeError,
    beyond,
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
        # libsndfile reads these too (the decoder goes by the content, as for a mislabelled body)
        "audio/aiff",
        "audio/x-aiff",
        "audio/basic",
        "application/octet-stream",
        # The names other tools give the files above were refused 415: freedesktop's shared-mime-info (xdg-mime,
        # GIO, Java's probeContentType on Linux) for .ogg, .opus and .aifc; mime-db (Node clients) for .caf;
        # Windows registries (a browser's upload there) for .mp3.
        "audio/x-vorbis+ogg",
        "audio/x-opus+ogg",
        "audio/x-aifc",
        "audio/x-caf",
        "audio/mpeg3",
        "audio/x-mpeg",
        "audio/x-mpeg-3",
        "audio/x-mp3",
    }
)
SUPPORTED_FORMATS_TEXT = "WAV, FLAC, OGG/Vorbis, OGG/Opus or MP3"
_OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")
# Samples decoded at a time, all channels together: 2 MiB of float32, 65536 frames of 8 channels, 512
# of libsndfile's most (1024), so memory does not follow the channels a file declares.
_BLOCK_SAMPLES = 2**19
# Sample values this far beyond full scale (±1) are no audio: their power overflows float32 in the
# features (the mel's 1024-point STFT multiplies the power by up to 2.6e5), which would fail only
# after a streamed answer has begun.
MAX_SAMPLE_MAGNITUDE = 1e6
# A WAV's RIFF size is 32 bits and counts 50 bytes of header beside the samples (wav32f: 58 in all, less 8).
MAX_WAV_DATA_BYTES = 2**32 - 1 - 50


class OutputFormat(str, enum.Enum):  # noqa: UP042 (StrEnum would change str() of its members)
    """Encodings of the returned audio (query parameter ``format``)."""

    WAV16 = "wav16"
    WAV32F = "wav32f"
    FLAC = "flac"

    @property
    def media_type(self) -> str:
        return "audio/flac" if self is OutputFormat.FLAC else "audio/wav"


# The media types each answer format is, in the server's order of preference (16-bit WAV by default).
_PRODUCED = {
    OutputFormat.WAV16: ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"),
    OutputFormat.FLAC: ("audio/flac", "audio/x-flac"),
}


def choose_format(requested: OutputFormat | None, accept: str | None, streamed: bool = False) -> OutputFormat:
    """The ``format`` query parameter if given, else what ``Accept`` prefers (RFC 9110 section 12.5.1: each
    format takes the quality of the most specific range that matches it, ``q=0`` refuses it; ties go to the
    range listed first, then to WAV), else 16-bit WAV; ``streamed``: a WAV where ``Accept`` allows one."""
    if requested is not None:
        return requested
    if not accept or not accept.strip():
        return OutputFormat.WAV16
    ranges = _accept_ranges(accept)
    ranked = []
    for preference, (fmt, types) in enumerate(_PRODUCED.items()):
        scored = [(_specificity(media, types), -position, quality) for position, (media, quality) in enumerate(ranges)]
        matches = [match for match in scored if match[0] is not None]
        if matches:
            _, position, quality = max(matches)  # the most specific range, the first of equals
            if quality > 0:
                ranked.append((-quality, -position, preference, fmt))
    if not ranked:
        raise NotAcceptableError(
            f"cannot produce any type in Accept: {clip(accept)}; available: audio/wav, audio/flac"
            " (or the format query parameter: wav16, wav32f, flac)"
        )
    if streamed and any(fmt is not OutputFormat.FLAC for *_, fmt in ranked):
        ranked = [rank for rank in ranked if rank[3] is not OutputFormat.FLAC]
    return min(ranked)[3]


def _specificity(media: str, types: tuple[str, ...]) -> int | None:
    """How closely an Accept range names one of ``types``: 2 exactly, 1 as ``audio/*``, 0 as ``*/*``; None:
    it does not."""
    return 2 if media in types else {"audio/*": 1, "*/*": 0}.get(media)


def _accept_ranges(accept: str) -> list[tuple[str, float]]:
    """``Accept`` -> (media range in lower case, its quality) in order; a ``q`` that is no number is 0."""
    ranges = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((fields[0].lower(), quality))
    return ranges


# FLAC's frame headers (libsndfile writes the streamable subset) hold a rate in Hz up to 65535, above it only in
# tens of Hz: libFLAC refuses 96001 Hz at initialisation.
MAX_FLAC_ANY_RATE = 65535


def check_encodable(fmt: OutputFormat, sample_rate: int) -> None:
    """InvalidParameterError unless ``fmt`` can carry ``sample_rate``: a route checks it before the compute, as
    :func:`encode_audio` does (``?sample_rate=96001&format=flac`` was a 500 once the audio was made)."""
    if fmt is OutputFormat.FLAC and sample_rate > MAX_FLAC_ANY_RATE and sample_rate % 10:
        raise InvalidParameterError(
            f"FLAC cannot carry a sample rate of {sample_rate} Hz: above {MAX_FLAC_ANY_RATE} Hz it takes only "
            f"multiples of 10 Hz; expected a sample_rate such as {sample_rate - sample_rate % 10}, or format=wav16 "
            "or wav32f (or an Accept header that allows audio/wav)"
        )


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: OutputFormat) -> bytes:
    """Encode mono float32 ``samples`` ``(S,)``; 16-bit formats clip to [-1, 1] first. A WAV is the bytes a
    streamed answer sends (:func:`wav_header`, then :func:`pcm_bytes`): one file whichever way it goes out."""
    if fmt is not OutputFormat.FLAC:
        return wav_header(samples.size, sample_rate, fmt) + pcm_bytes(samples, fmt)
    check_encodable(fmt, sample_rate)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def pcm_bytes(samples: np.ndarray, fmt: OutputFormat) -> bytes:
    """Mono float32 ``samples`` ``(S,)`` as the raw little-endian sample data of ``fmt`` (a WAV's data
    chunk): 16-bit through libsndfile's conversion of ``clip(x, -1, 1)``, as its FLAC is; float32 as is."""
    if fmt is OutputFormat.WAV32F:
        return samples.astype("<f4").tobytes()
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), 24000, format="RAW", subtype="PCM_16", endian="LITTLE")
    return buffer.getvalue()


def wav_header(samples: int, sample_rate: int, fmt: OutputFormat) -> bytes:
    """The header of a mono WAV of ``samples`` samples in ``fmt`` (16-bit PCM, or IEEE float with a
    ``fact`` chunk), after which :func:`pcm_bytes` of the samples make the whole file."""
    if fmt is OutputFormat.FLAC:
        raise ValueError("FLAC has no fixed-size header to send ahead of its frames")
    width, code = (4, 3) if fmt is OutputFormat.WAV32F else (2, 1)
    data = samples * width
    if data > MAX_WAV_DATA_BYTES:
        raise PayloadTooLargeError(f"the answer would hold {data} bytes of samples, more than a WAV's 32-bit sizes "
                                   "allow (4 GiB); ask for format=flac, a lower sample_rate, or less audio")
    if code == 3:  # a format other than PCM has the extension size too (0 here), or sox warns on every file
        fmt_chunk = struct.pack("<4sIHHIIHHH", b"fmt ", 18, code, 1, sample_rate, sample_rate * width, width,
                                8 * width, 0)
    else:
        fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, code, 1, sample_rate, sample_rate * width, width, 8 * width)
    fact = struct.pack("<4sII", b"fact", 4, samples) if code == 3 else b""
    riff_size = 4 + len(fmt_chunk) + len(fact) + 8 + data
    return struct.pack("<4sI4s", b"RIFF", riff_size, b"WAVE") + fmt_chunk + fact + struct.pack("<4sI", b"data", data)


def wav_file_bytes(header: bytes) -> int:
    """The size of the whole WAV file that :func:`wav_header` ``header`` begins: its RIFF size plus the 8
    bytes of the RIFF chunk's own header."""
    return struct.unpack_from("<I", header, 4)[0] + 8


def resampled_length(frames: int, rate: int, target_rate: int) -> int:
    """Samples at ``target_rate`` lasting as long as ``frames`` at ``rate``: ``round(frames * target_rate
    / rate)``, halves rounded up (in integers, so exact for any length)."""
    return (2 * frames * target_rate + rate) // (2 * rate)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """``samples`` ``(S,)`` trimmed, or padded with trailing zeros, to exactly ``length`` samples."""
    if samples.size >= length:
        return samples[:length]
    return np.concatenate([samples, np.zeros(length - samples.size, dtype=samples.dtype)])


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 ``samples`` ``(S,)`` at ``rate`` -> ``resampled_length(S, rate, target_rate)`` samples
    at ``target_rate`` (soxr, high quality): the same duration, to the sample."""
    out = soxr.resample(samples, rate, target_rate, quality="HQ")
    return fit_length(np.ascontiguousarray(out, dtype=np.float32), resampled_length(samples.size, rate, target_rate))


@dataclass(frozen=True)
class DecodedAudio:
    """An audio file decoded: mono float32 ``samples`` ``(S,)`` at the rate asked for, and the file's own
    ``frames`` at its ``rate``, which give the exact length of an answer at any rate."""

    samples: np.ndarray
    frames: int
    rate: int

    def length_at(self, rate: int) -> int:
        """Samples at ``rate`` lasting exactly as long as the file (rounded once, from the file's frames)."""
        return resampled_length(self.frames, self.rate, rate)


def decode_audio(body: bytes, target_rate: int, max_seconds: float, *, min_rate: int = 1) -> DecodedAudio:
    """Decode an audio file to mono float32 ``(S,)`` at ``target_rate``, S = ``resampled_length(frames,
    rate, target_rate)`` for a file of ``frames`` frames at ``rate``: exactly the file's duration.

    Raises MalformedPayloadError (undecodable), InvalidInputError (empty, NaN, samples beyond
    :data:`MAX_SAMPLE_MAGNITUDE`, a sample rate below ``min_rate``, from the header before decoding) or
    PayloadTooLargeError (longer than ``max_seconds``).
    """
    if not body:
        raise InvalidInputError(
            f"the request body is empty; expected an audio file ({SUPPORTED_FORMATS_TEXT})"
        )
    try:
        with sf.SoundFile(io.BytesIO(_data_to_the_end(body))) as audio_file:
            rate = int(audio_file.samplerate)
            _check_rate(rate, min_rate)
            limit = math.floor(max_seconds * rate)
            if _declared_frames(audio_file) > limit:
                _too_long(audio_file.frames / rate, max_seconds)
            return _decode_mono(audio_file, limit, target_rate, max_seconds)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise MalformedPayloadError(
            f"could not decode the audio file; expected {SUPPORTED_FORMATS_TEXT} ({_decoder_message(exc)})"
        ) from None


def _declared_frames(audio_file: sf.SoundFile) -> int:
    """The frames the file's header declares, 0 where it does not know them: libsndfile reports 0 or a huge
    count when the header leaves the length unknown, and for MPEG audio a guess from the first frame's bitrate
    unless a Xing/VBRI frame gives the count. A VBR file whose first frames are quiet has several times its
    length guessed, so MPEG is held to the limit while it decodes."""
    if audio_file.subtype.startswith("MPEG_") or not 0 < audio_file.frames < 2**62:
        return 0
    return int(audio_file.frames)


_HEADER_CHUNKS = 16  # chunks before the data chunk looked at (fmt, fact, LIST, ...)


def _data_to_the_end(body: bytes) -> bytes:
    """``body``, or, for a WAV whose data chunk declares 0 bytes and is followed by some, a copy that declares
    0xFFFFFFFF: "to the end of the file", which libsndfile reads so (ffmpeg writes it to a pipe). Writers
    that cannot seek back to fill in the size (Python's ``wave`` on a stream, streaming TTS servers) leave
    0, which libsndfile reads as no samples at all."""
    if body[:4] != b"RIFF" or body[8:12] != b"WAVE":
        return body
    offset = 12
    # Such writers put the data chunk right after the header; a walk over every chunk of a body of millions
    # of empty ones would take seconds of Python where libsndfile refuses it in milliseconds.
    for _ in range(_HEADER_CHUNKS):
        if offset + 8 > len(body):
            break
        chunk, size = body[offset : offset + 4], int.from_bytes(body[offset + 4 : offset + 8], "little")
        if chunk == b"data":
            if size == 0 and len(body) > offset + 8:
                return body[: offset + 4] + b"\xff\xff\xff\xff" + body[offset + 8 :]
            return body
        offset += 8 + size + (size & 1)  # chunks are word-aligned
    return body


def _decoder_message(exc: Exception) -> str:
    """What the decoder found wrong, without the file object's repr and its memory address that
    soundfile puts in front ("Error opening <_io.BytesIO object at 0x7f...>: ")."""
    text = exc.error_string if isinstance(exc, sf.LibsndfileError) else str(exc)
    return _OBJECT_REPR.sub("", text).strip(" :") or type(exc).__name__


def _decode_mono(audio_file: sf.SoundFile, limit: int, target_rate: int, max_seconds: float) -> DecodedAudio:
    """Decode block by block, mixing each block to mono and resampling it as it comes.

    Memory then follows the 24 kHz mono result, not the channels or sample rate a file declares (8
    channels at 192 kHz read whole would take 64x more), and decoding stops one block past ``limit``
    frames when the header does not say how long the file is. soxr's stream gives the same samples
    as its one-shot ``resample``.
    """
    rate = int(audio_file.samplerate)
    resampler = None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, "float32", "HQ")
    parts: list[np.ndarray] = []
    frames = 0
    block = np.empty((max(1, _BLOCK_SAMPLES // audio_file.channels), audio_file.channels), np.float32)
    while count := _read_block(audio_file, block, frames):
        frames += count
        if frames > limit:
            _too_long(frames / rate, max_seconds, at_least=True)
        mono = _checked_mono(block[:count])
        parts.append(mono if resampler is None else resampler.resample_chunk(mono))
    if frames == 0:
        # An OGG of a second cut short holds its headers but no whole page of audio: libsndfile finds none.
        raise InvalidInputError(
            "the audio file contains no samples; expected at least one (a file cut short may hold no whole block)"
        )
    if resampler is not None:
        parts.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    # soxr's stream may end a sample or so off the exact resampled duration.
    samples = fit_length(np.concatenate(parts), resampled_length(frames, rate, target_rate))
    return DecodedAudio(np.ascontiguousarray(samples, dtype=np.float32), frames, rate)


def _read_block(audio_file: sf.SoundFile, block: np.ndarray, frames: int) -> int:
    """Decode the next frames, after the ``frames`` already decoded, into ``block`` ``(n, channels)``; how
    many came (0 at the end).

    libsndfile's own read, not ``SoundFile.read``: that one seeks to where it believes the read ended
    after every block, which fails ("psf_fseek() failed") at the end of a FLAC whose header leaves the
    length unknown (as encoders writing to a pipe make them), losing the last block and the file.
    A decoder that fails once some audio came says how far the file decoded, against what its header
    declares: a FLAC cut short (an interrupted copy) failed with "could not decode the audio file;
    expected WAV, FLAC, ..." ("lost sync" in brackets), which told the sender of a FLAC to send one. One that
    fails only after all the frames its header declares is whole."""
    count = int(sf._snd.sf_readf_float(audio_file._file, sf._ffi.from_buffer("float[]", block), block.shape[0]))
    error = sf._snd.sf_error(audio_file._file)
    if not error:
        return count
    decoded, declared = frames + count, _declared_frames(audio_file)
    if 0 < declared <= decoded:
        # Every frame the header declares came: the decoder failed on bytes after them, as libFLAC does ("lost
        # sync") on an ID3v1 tag that taggers append to a FLAC, or on padding. Such whole files were refused.
        return count
    if decoded > 0:
        rate = int(audio_file.samplerate)
        of = f" of the {declared / rate:.3f} s its header declares" if declared > decoded else ""
        raise MalformedPayloadError(
            f"could not decode the whole audio file: it is damaged or cut short, decoding failed after "
            f"{decoded / rate:.3f} s{of} ({_decoder_message(sf.LibsndfileError(error))}); expected a complete "
            f"{SUPPORTED_FORMATS_TEXT} file"
        )
    sf._error_check(error)  # nothing decoded: no audio file of a supported format (decode_audio's message)
    return count


def _checked_mono(block: np.ndarray) -> np.ndarray:
    """Decoded frames ``(frames, channels)`` mixed to mono ``(frames,)``, refused where no audio: NaN, Inf, or
    beyond :data:`MAX_SAMPLE_MAGNITUDE` (checked before mixing, whose float32 sum could overflow)."""
    peak = float(np.abs(block).max(initial=0.0))
    if not math.isfinite(peak):
        raise InvalidInputError("the audio file contains NaN or Inf samples; expected finite samples within ±1 "
                                "(full scale)")
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise InvalidInputError(
            f"the audio file has samples of magnitude {peak:.3g}; audio is expected within ±1 (full scale), "
            f"and at most ±{MAX_SAMPLE_MAGNITUDE:g} is taken"
        )
    return block.mean(axis=1, dtype=np.float32)  # mix channels (frames, channels) -> (frames,)


def _check_rate(rate: int, min_rate: int) -> None:
    # 599 samples at 1 Hz would be resampled into 599 s of audio for the vocoder: refused up front.
    if rate < min_rate:
        raise InvalidInputError(
            f"the audio's sample rate is {rate} Hz; this server accepts {min_rate} Hz or more "
            "(VOCOS_MIN_SAMPLE_RATE)"
        )


def _too_long(seconds: float, max_seconds: float, at_least: bool = False) -> NoReturn:
    more = "at least " if at_least else ""
    raise PayloadTooLargeError(
        f"the audio lasts {more}{beyond(seconds, max_seconds)} s; this server accepts at most {max_seconds:g} s "
        "per request (VOCOS_MAX_AUDIO_SECONDS)"
    )
