"""A WAV reader that takes the bytes as they arrive: RIFF header, ``fmt `` and ``data`` chunks, then
samples. Written here because the standard ``wave`` module reads PCM only (no IEEE float) and wants the
whole file seekable; a streamed answer is neither."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .errors import protocol_error

PCM = 1
IEEE_FLOAT = 3
EXTENSIBLE = 0xFFFE
# A data size of 0xFFFFFFFF (or 0) means "until the end" in streamed WAVs.
UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_DTYPES = {(PCM, 16): "<i2", (PCM, 32): "<i4", (IEEE_FLOAT, 32): "<f4", (IEEE_FLOAT, 64): "<f8"}


@dataclass(frozen=True)
class WavFormat:
    """What the header says: rate, channels, sample type, and the number of frames (None: unknown)."""

    sample_rate: int
    channels: int
    dtype: str
    frames: int | None


class WavReader:
    """``feed(bytes)`` -> the float32 samples ``(S,)`` complete so far (channels are averaged to mono),
    ``format`` once the header is in. PCM is divided by 2**(bits-1) (32768 for 16 bits), as libsndfile, which
    writes the server's WAVs, scales it."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.format: WavFormat | None = None
        self._left: int | None = None  # data bytes still to come (None: until the end)

    def feed(self, data: bytes) -> np.ndarray:
        self._buffer += data
        if self.format is None and not self._parse_header():
            return np.zeros(0, np.float32)
        return self._samples()

    def close(self) -> None:
        """The body ended: raises if the header never came or the data was cut short."""
        if self.format is None:
            raise protocol_error(f"the answer ended inside the WAV header ({len(self._buffer)} bytes)")
        if self._left not in (None, 0):
            raise protocol_error(f"the WAV data ended {self._left} bytes short of the size in its header")

    def _parse_header(self) -> bool:
        """Consume the header when all of it is in; False while it is not."""
        buf = bytes(self._buffer)
        if len(buf) < 12:
            return False
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise protocol_error(f"not a WAV answer: it starts with {buf[:12]!r}")
        offset, fmt = 12, None
        while len(buf) >= offset + 8:
            tag, size = buf[offset:offset + 4], struct.unpack_from("<I", buf, offset + 4)[0]
            if tag == b"data":
                if fmt is None:
                    raise protocol_error("the WAV data chunk comes before its fmt chunk")
                del self._buffer[:offset + 8]
                self._left = None if size in UNKNOWN_SIZES else size
                self.format = _with_frames(fmt, self._left)
                return True
            if len(buf) < offset + 8 + size:
                return False
            if tag == b"fmt ":
                fmt = _parse_fmt(buf[offset + 8:offset + 8 + size])
            offset += 8 + size + (size & 1)  # chunks are padded to even sizes
        return False

    def _samples(self) -> np.ndarray:
        fmt = self.format
        assert fmt is not None
        frame = np.dtype(fmt.dtype).itemsize * fmt.channels
        usable = len(self._buffer) if self._left is None else min(len(self._buffer), self._left)
        usable -= usable % frame
        raw = np.frombuffer(bytes(self._buffer[:usable]), dtype=fmt.dtype)
        del self._buffer[:usable]
        if self._left is not None:
            self._left -= usable
        return _to_float(raw, fmt)


def _parse_fmt(chunk: bytes) -> WavFormat:
    if len(chunk) < 16:
        raise protocol_error(f"the WAV fmt chunk has {len(chunk)} bytes, expected at least 16")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunk)
    if tag == EXTENSIBLE and len(chunk) >= 26:
        tag = struct.unpack_from("<H", chunk, 24)[0]  # the first two bytes of the sub-format GUID
    dtype = _DTYPES.get((tag, bits))
    if dtype is None or channels < 1:
        raise protocol_error(f"unsupported WAV encoding: format {tag}, {bits} bits, {channels} channels "
                             "(expected 16/32-bit PCM or 32/64-bit float)")
    return WavFormat(rate, channels, dtype, None)


def _with_frames(fmt: WavFormat, data_bytes: int | None) -> WavFormat:
    frames = None if data_bytes is None else data_bytes // (np.dtype(fmt.dtype).itemsize * fmt.channels)
    return WavFormat(fmt.sample_rate, fmt.channels, fmt.dtype, frames)


def _to_float(raw: np.ndarray, fmt: WavFormat) -> np.ndarray:
    """Interleaved samples -> float32 ``(frames,)``, channels averaged."""
    if raw.dtype.kind == "i":
        samples = raw.astype(np.float32) / np.float32(2 ** (8 * raw.dtype.itemsize - 1))
    else:
        samples = raw.astype(np.float32)
    if fmt.channels > 1:
        samples = samples.reshape(-1, fmt.channels).mean(axis=1, dtype=np.float32)  # (frames, channels) -> mono
    return samples


def read_wav(data: bytes) -> tuple[np.ndarray, WavFormat]:
    """A whole WAV file -> (float32 samples ``(S,)``, its format)."""
    reader = WavReader()
    samples = reader.feed(data)
    reader.close()
    assert reader.format is not None
    return samples, reader.format
