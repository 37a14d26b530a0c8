"""What the sync and async clients share: the requests they build, and the answers they read.

No I/O here; :mod:`vocos_client.client` and :mod:`vocos_client.async_client` send and receive.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from .errors import from_http, protocol_error, retry_after
from .wav import WavFormat, read_wav

NPY = "application/x-npy"
# The formats a caller may ask for, as types too: a misspelt one is the caller's type checker's error first.
AnswerFormat = Literal["wav16", "wav32f"]
StreamFormat = Literal["pcm16", "f32"]
WAV_FORMATS: tuple[str, ...] = get_args(AnswerFormat)
STREAM_FORMATS: tuple[str, ...] = get_args(StreamFormat)
# What resynthesize accepts: a file path, the bytes of an audio file, or (samples (S,) or (S, channels), rate).
AudioInput = str | os.PathLike[str] | bytes | tuple[np.ndarray, int]
_AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg",
                ".mp3": "audio/mpeg"}


# eq=False: the generated __eq__ would compare the sample arrays as a tuple and raise numpy's "truth value
# of an array is ambiguous" (and the generated __hash__ could not hash them); two answers are the same
# object or not, and their samples compare with numpy.
@dataclass(frozen=True, eq=False)
class Audio:
    """A decoded answer: float32 ``samples`` ``(S,)`` at ``sample_rate`` Hz, the ``model`` that made them,
    and the server's ``warning`` about the input (``X-Input-Warning``), if any. Answers compare by identity:
    compare their ``samples`` with ``numpy.array_equal``."""

    samples: np.ndarray
    sample_rate: int
    model: str
    warning: str | None = None

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass(frozen=True)
class Call:
    """One HTTP request, before a transport sends it."""

    method: str
    path: str
    params: dict[str, Any]
    content: bytes | None = None
    headers: dict[str, str] | None = None


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as a ``.npy`` body (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def query(**params: Any) -> dict[str, Any]:
    """The query parameters that were given (None: leave it to the server)."""
    return {k: v for k, v in params.items() if v is not None}


def wav_format(fmt: str | None) -> str:
    """The answer's format; the client reads WAV itself, float32 unless asked for 16-bit."""
    fmt = fmt or "wav32f"
    if fmt not in WAV_FORMATS:
        raise ValueError(f"format must be one of {', '.join(WAV_FORMATS)} (the client decodes WAV), got {fmt!r}")
    return fmt


def mel_call(mel: np.ndarray, model: str | None, sample_rate: int | None, fmt: str | None, stream: bool) -> Call:
    """POST /decode/mel of ``mel`` ``(n_mels, T)`` float32."""
    params = query(model=model, sample_rate=sample_rate, format=wav_format(fmt), stream="true" if stream else None)
    return Call("POST", "/decode/mel", params, npy_bytes(mel_body(mel)), {"content-type": NPY})


def mel_body(mel: np.ndarray) -> np.ndarray:
    """Floats as float32; anything else as it is, for the server to refuse with its own message, as a stream's
    frames are (integers are no log-mel: more likely codes, or a grid of the wrong kind)."""
    array = numeric(mel)
    return array.astype(np.float32, copy=False) if np.issubdtype(array.dtype, np.floating) else array


def numeric(values: Any) -> np.ndarray:
    """``values`` as a numeric array; TypeError for what no ``.npy`` body holds: numpy's own error was "Object
    arrays cannot be saved when allow_pickle=False" for None, and strings went out for the server to call a
    shape ``(1,)`` the caller never gave."""
    array = np.asarray(values)
    if array.dtype.kind in "OUSV":  # object (None, mixed items), str, bytes, records
        raise TypeError("expected a numeric array: (n_mels, T) floats, or (K, T) integer codes; got "
                        f"{type(values).__name__} (numpy dtype {array.dtype})")
    return array


def codes_call(codes: np.ndarray, model: str | None, bandwidth_id: int | None, bandwidth: float | None,
               sample_rate: int | None, fmt: str | None, stream: bool) -> Call:
    """POST /decode/encodec of ``codes`` ``(K, T)`` ints."""
    params = query(model=model, bandwidth_id=bandwidth_id, bandwidth=bandwidth, sample_rate=sample_rate,
                   format=wav_format(fmt), stream="true" if stream else None)
    return Call("POST", "/decode/encodec", params, npy_bytes(codes_body(codes)), {"content-type": NPY})


def codes_body(codes: np.ndarray) -> np.ndarray:
    """Integer codes as int64; anything else as it is, for the server to refuse with its own message (a
    cast here would turn 3.7 into 3 and NaN into a huge negative number without a word)."""
    array = numeric(codes)
    if array.dtype == np.uint64 and array.size and int(array.max()) > np.iinfo(np.int64).max:
        return array  # as it is: int64 would wrap these to negative numbers; the server refuses them by value
    return array.astype(np.int64) if np.issubdtype(array.dtype, np.integer) else array


def resynthesis_call(audio: AudioInput, model: str | None, bandwidth_id: int | None, bandwidth: float | None,
                     sample_rate: int | None, fmt: str | None, stream: bool) -> Call:
    """POST /resynthesize of an audio file."""
    content, content_type = audio_body(audio)
    params = query(model=model, bandwidth_id=bandwidth_id, bandwidth=bandwidth, sample_rate=sample_rate,
                   format=wav_format(fmt), stream="true" if stream else None)
    return Call("POST", "/resynthesize", params, content, {"content-type": content_type})


def audio_body(audio: AudioInput) -> tuple[bytes, str]:
    """(the file's bytes, its content type); samples become a float32 WAV."""
    if isinstance(audio, tuple):
        if len(audio) != 2:
            raise TypeError(f"audio as a tuple is (samples, sample_rate), got a tuple of {len(audio)} items")
        samples, rate = audio
        grid = _sample_grid(np.asarray(samples))
        return float_wav(float_samples(grid), _sample_rate(rate, grid)), "audio/wav"
    if isinstance(audio, bytes):
        return audio, _sniff(audio)
    if not isinstance(audio, str | os.PathLike):
        # Path() said "expected str, bytes or os.PathLike object, not ndarray" for samples given without their rate.
        raise TypeError(f"audio must be a file path, the bytes of an audio file, or a (samples, sample_rate) tuple; "
                        f"got {type(audio).__name__}" + (" (pass (samples, rate))" if hasattr(audio, "shape") else ""))
    path = Path(audio)
    return path.read_bytes(), _AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _sample_grid(samples: np.ndarray) -> np.ndarray:
    """``(S,)`` or ``(S, channels)`` samples, checked: ValueError for what no WAV file holds."""
    if samples.ndim not in (1, 2) or samples.shape[0] == 0 or (samples.ndim == 2 and samples.shape[1] == 0):
        raise ValueError(f"audio samples must be (S,) or (S, channels) with S >= 1 and channels >= 1, got shape "
                         f"{samples.shape}")
    if samples.ndim == 2 and samples.shape[1] > 64 >= samples.shape[0]:
        raise ValueError(f"audio samples of shape {samples.shape} look channels-first; pass (S, channels) "
                         "(samples.T)")
    return samples


def _sample_rate(rate: object, samples: np.ndarray) -> int:
    """The rate of ``(samples, rate)``, checked: a WAV header holds a whole number of Hz, and its byte rate
    (rate * 4 * channels) in 32 bits. Unchecked, 0 made a header the server could not read ("could not decode the
    audio file"), -1 an OverflowError about unsigned ints, and 22050.5 went out as 22050 without a word."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    highest = 2**32 // (4 * channels) - 1
    try:
        whole: int = int(rate)  # type: ignore[call-overload]
        exact = whole == rate
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite rate
        exact = False
    if not exact or not 1 <= whole <= highest:
        raise ValueError(f"the sample rate of (samples, rate) must be a whole number of Hz from 1 to {highest} "
                         f"(a WAV header's 32-bit byte rate at {channels} channel(s) of float32), got {rate!r}")
    return whole


def _sniff(data: bytes) -> str:
    if data[:4] == b"RIFF":
        return "audio/wav"
    if data[:4] == b"fLaC":
        return "audio/flac"
    if data[:4] == b"OggS":
        return "audio/ogg"
    return "audio/mpeg" if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2") else "audio/wav"


def float_samples(samples: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1): integer PCM scaled as libsndfile reads it (int16 / 32768, uint8 around
    128), floats as they are."""
    if np.issubdtype(samples.dtype, np.signedinteger):
        return (samples / np.float32(2 ** (8 * samples.dtype.itemsize - 1))).astype(np.float32)
    if samples.dtype == np.uint8:
        return ((samples.astype(np.float32) - 128) / np.float32(128)).astype(np.float32)
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"audio samples must be float or integer PCM, got {samples.dtype}")
    return samples.astype(np.float32)


def float_wav(samples: np.ndarray, rate: int) -> bytes:
    """Samples ``(S,)`` or ``(S, channels)`` as an IEEE-float WAV file."""
    frames = samples.reshape(samples.shape[0], -1).astype("<f4")  # (S,) -> (S, 1); rows interleave channels
    channels, data = frames.shape[1], frames.tobytes()
    header = b"".join([
        b"RIFF", (36 + len(data)).to_bytes(4, "little"), b"WAVE", b"fmt ", (16).to_bytes(4, "little"),
        (3).to_bytes(2, "little"), channels.to_bytes(2, "little"), rate.to_bytes(4, "little"),
        (rate * 4 * channels).to_bytes(4, "little"), (4 * channels).to_bytes(2, "little"), (32).to_bytes(2, "little"),
        b"data", len(data).to_bytes(4, "little"),
    ])
    return header + data


def check(status: int, headers: Any, body: bytes) -> None:
    """Raise the server's error when ``status`` is not 2xx."""
    if not 200 <= status < 300:
        raise from_http(status, body, headers.get("x-request-id"), retry_after(headers.get("retry-after")))


def audio_of(headers: Any, fmt: WavFormat, samples: np.ndarray) -> Audio:
    """An answer's audio with what its headers say."""
    return Audio(samples, fmt.sample_rate, headers.get("x-model", ""), headers.get("x-input-warning"))


def decoded(status: int, headers: Any, body: bytes) -> Audio:
    """A whole WAV answer -> :class:`Audio`."""
    check(status, headers, body)
    samples, fmt = read_wav(body)
    return audio_of(headers, fmt, samples)


def models_of(answer: Any) -> list[dict[str, Any]]:
    """GET /models' list; a protocol error when the answer holds none."""
    if not isinstance(answer, dict) or not isinstance(answer.get("models"), list):
        raise protocol_error(f"expected {{\"models\": [...]}}, got {str(answer)[:80]!r}")
    return list(answer["models"])


def json_of(status: int, headers: Any, body: bytes) -> Any:
    """A JSON answer (GET /models, /healthz, /readyz)."""
    check(status, headers, body)
    try:
        return json.loads(body)
    except ValueError:
        raise protocol_error(f"expected JSON, got {body[:80]!r}") from None


def pcm_samples(data: bytes, fmt: str) -> np.ndarray:
    """A WebSocket audio message (raw little-endian ``pcm16`` or ``f32``) -> float32 ``(S,)``; a protocol error
    for a message that holds no whole number of samples (numpy's ValueError would kill a session's receiver)."""
    width = 2 if fmt == "pcm16" else 4
    if len(data) % width:
        raise protocol_error(f"expected an audio message of whole {fmt} samples ({width} bytes each), got "
                             f"{len(data)} bytes")
    if fmt == "pcm16":
        # The samples of a 16-bit WAV answer (libsndfile's conversion), read back as libsndfile reads them.
        return np.frombuffer(data, "<i2").astype(np.float32) / np.float32(32768.0)
    return np.frombuffer(data, "<f4").astype(np.float32)
