"""Reading a WAV answer as it arrives (``stream=True``), for the sync and async clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np

from .errors import VocosClientError
from .wav import WavReader
from .wire import Audio, audio_of


class _Chunks:
    """The part both kinds share: the header's facts, and the samples read with it."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._reader = WavReader()
        self._pending: list[np.ndarray] = []
        self.sample_rate = 0
        self.model = response.headers.get("x-model", "")
        self.warning: str | None = response.headers.get("x-input-warning")
        self.total_samples: int | None = None  # from the WAV header; None if it did not say
        self.samples_read = 0
        self._complete = False  # read to the WAV's end
        self._closed = False  # by close(), or by leaving a loop over it (whose end closes it)

    def _check_open(self) -> None:
        """Refuse to go on reading an answer closed before its end: the network read would fail with an
        error that blames the server (or, from a buffered body, go on as if nothing had been skipped)."""
        if self._closed and not self._complete:
            raise ValueError("this answer was closed before its end (a loop over it was left early, or close() "
                             f"was called) after {self.samples_read} samples; the rest is gone: make the call again")

    def _take(self, data: bytes) -> np.ndarray:
        samples = self._reader.feed(data)
        self.samples_read += samples.size
        fmt = self._reader.format
        if fmt is not None and not self.sample_rate:
            self.sample_rate, self.total_samples = fmt.sample_rate, fmt.frames
        return samples

    def _broke_off(self, exc: httpx.HTTPError) -> VocosClientError:
        """The connection dropped before the answer's end: the server failed after sending its headers
        (it logged the failure under the request id), or the network broke."""
        got = self.samples_read
        request_id = self._response.headers.get("x-request-id")
        error = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"  # the client's timeout ran out
        return VocosClientError(0, error, f"the answer broke off after {got} of {self.total_samples} samples "
                                f"({type(exc).__name__}: {exc})", request_id)

    def _audio(self, parts: list[np.ndarray]) -> Audio:
        assert self._reader.format is not None
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return audio_of(self._response.headers, self._reader.format, samples)


class AudioChunks(_Chunks):
    """``for chunk in chunks``: float32 samples ``(S_i,)`` as the answer's bytes arrive. Made once the WAV
    header is in, so ``sample_rate`` and ``total_samples`` are known before the first chunk."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response)
        self._bytes = response.iter_bytes()
        try:
            while self._reader.format is None:
                data = next(self._bytes, None)
                if data is None:
                    self._reader.close()  # raises: the body ended inside the header
                self._pending.append(self._take(data or b""))
        except httpx.HTTPError as exc:
            response.close()
            raise self._broke_off(exc) from None
        except BaseException:
            response.close()
            raise

    def __iter__(self) -> Iterator[np.ndarray]:
        self._check_open()
        try:
            for samples in self._pending:
                if samples.size:
                    yield samples
            self._pending = []
            for data in self._bytes:
                samples = self._take(data)
                if samples.size:
                    yield samples
            self._reader.close()
            self._complete = True
        except httpx.HTTPError as exc:
            raise self._broke_off(exc) from None
        finally:
            self.close()

    def read(self) -> Audio:
        """All the rest, as one :class:`Audio`."""
        return self._audio(list(self))

    def close(self) -> None:
        self._closed = True
        self._response.close()

    def __enter__(self) -> AudioChunks:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncAudioChunks(_Chunks):
    """``async for chunk in chunks``: as :class:`AudioChunks`; made by :meth:`opened`."""

    @classmethod
    async def opened(cls, response: httpx.Response) -> AsyncAudioChunks:
        """Read up to the end of the WAV header."""
        chunks = cls(response)
        chunks._bytes = response.aiter_bytes()
        try:
            while chunks._reader.format is None:
                data = await anext(chunks._bytes, None)
                if data is None:
                    chunks._reader.close()
                chunks._pending.append(chunks._take(data or b""))
        except httpx.HTTPError as exc:
            await response.aclose()
            raise chunks._broke_off(exc) from None
        except BaseException:
            await response.aclose()
            raise
        return chunks

    _bytes: AsyncIterator[bytes]

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        self._check_open()
        try:
            for samples in self._pending:
                if samples.size:
                    yield samples
            self._pending = []
            async for data in self._bytes:
                samples = self._take(data)
                if samples.size:
                    yield samples
            self._reader.close()
            self._complete = True
        except httpx.HTTPError as exc:
            raise self._broke_off(exc) from None
        finally:
            await self.aclose()

    async def read(self) -> Audio:
        """All the rest, as one :class:`Audio`."""
        return self._audio([samples async for samples in self])

    async def aclose(self) -> None:
        self._closed = True
        await self._response.aclose()

    async def __aenter__(self) -> AsyncAudioChunks:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
