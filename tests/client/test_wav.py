"""The client's WAV reader on files from libsndfile, fed in pieces of any size, and the streamed answer read
progressively: the first samples come out before the rest of the body exists."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from vocos_client import AsyncClient, Client, RetryPolicy, VocosClientError, WavReader, read_wav

SIGNAL = (0.5 * np.sin(np.arange(5000) * 0.01)).astype(np.float32)


def _wav(samples: np.ndarray, subtype: str, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    data = np.stack([samples] * channels, axis=1) if channels > 1 else samples  # (S,) -> (S, channels)
    sf.write(buffer, data, 24000, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(("subtype", "tolerance"), [("FLOAT", 0.0), ("PCM_16", 1 / 32768 + 1e-7), ("PCM_32", 1e-7),
                                                    ("DOUBLE", 0.0)])
def test_reads_what_libsndfile_writes_in_pieces_of_any_size(subtype: str, tolerance: float) -> None:
    data = _wav(SIGNAL, subtype)
    rng = np.random.default_rng(1)
    reader, parts, at = WavReader(), [], 0
    while at < len(data):
        step = int(rng.integers(1, 300))
        parts.append(reader.feed(data[at:at + step]))
        at += step
    reader.close()
    assert reader.format is not None and reader.format.sample_rate == 24000 and reader.format.frames == SIGNAL.size
    samples = np.concatenate(parts)
    assert samples.dtype == np.float32 and samples.shape == SIGNAL.shape
    assert np.abs(samples - SIGNAL).max() <= tolerance


def test_channels_are_averaged_and_extra_chunks_skipped() -> None:
    data = _wav(SIGNAL, "FLOAT", channels=2)
    # A LIST chunk of odd length (padded to even) between fmt and data, as tagging tools write.
    at = data.index(b"data")
    tagged = data[:at] + b"LIST" + (3).to_bytes(4, "little") + b"abc\x00" + data[at:]
    samples, fmt = read_wav(tagged)
    assert fmt.channels == 2
    np.testing.assert_array_equal(samples, SIGNAL)


def test_a_cut_answer_and_a_non_wav_are_errors() -> None:
    with pytest.raises(VocosClientError, match="short of the size"):
        read_wav(_wav(SIGNAL, "PCM_16")[:-10])
    with pytest.raises(VocosClientError, match="not a WAV"):
        read_wav(b"OggS" + bytes(100))
    with pytest.raises(VocosClientError, match="inside the WAV header"):
        read_wav(b"RIFF\x00\x00")


def test_a_streamed_answer_yields_samples_before_the_body_ends() -> None:
    """The body's second half is produced only after the client has the first chunk of samples."""
    data = _wav(SIGNAL, "FLOAT")
    half = len(data) // 2
    first_seen = threading.Event()

    def body() -> Iterator[bytes]:
        yield data[:half]
        assert first_seen.wait(10), "the client waited for the whole body"
        yield data[half:]

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params["stream"] == "true"
        return httpx.Response(200, headers={"x-model": "mel"}, content=body())

    with Client("http://vocos.test", transport=httpx.MockTransport(answer)) as client:
        chunks = client.decode_mel(np.zeros((100, 3), np.float32), stream=True)
        assert chunks.total_samples == SIGNAL.size and chunks.model == "mel"
        parts = []
        for part in chunks:
            parts.append(part)
            first_seen.set()
    assert len(parts) >= 2
    np.testing.assert_array_equal(np.concatenate(parts), SIGNAL)


class _Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends ``head`` and then fails as a network does (``exc``)."""

    def __init__(self, head: bytes, exc: httpx.HTTPError) -> None:
        self.head, self.exc = head, exc

    def __iter__(self) -> Iterator[bytes]:
        if self.head:
            yield self.head
        raise self.exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.head:
            yield self.head
        raise self.exc


@pytest.mark.parametrize(("status", "exc", "error"), [
    (200, httpx.ReadTimeout("timed out"), "timeout"),  # the WAV header never came
    (200, httpx.RemoteProtocolError("peer closed"), "connection"),
    (500, httpx.ReadTimeout("timed out"), "timeout"),  # an error answer whose body never came
])
def test_an_answer_broken_before_its_header_is_a_client_error(status: int, exc: httpx.HTTPError, error: str) -> None:
    """httpx's own exceptions escaped ``stream=True`` while the WAV header or an error body was read."""
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"x-model": "mel"}, stream=_Broken(b"RIFF", exc))

    async def run() -> VocosClientError:
        async with AsyncClient("http://vocos.test", transport=httpx.MockTransport(answer),
                               retry=RetryPolicy(retries=0)) as client:
            with pytest.raises(VocosClientError) as caught:
                await client.decode_mel(np.zeros((100, 3), np.float32), stream=True)
            return caught.value

    with (Client("http://vocos.test", transport=httpx.MockTransport(answer), retry=RetryPolicy(retries=0)) as client,
          pytest.raises(VocosClientError) as sync):
        client.decode_mel(np.zeros((100, 3), np.float32), stream=True)
    for caught in (sync.value, asyncio.run(run())):
        assert (caught.status, caught.error) == (0, error), caught
