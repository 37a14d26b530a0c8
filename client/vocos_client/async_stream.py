"""A WebSocket stream for asyncio programs (:mod:`websockets.asyncio.client`): a receiver task reads the
audio while the caller's tasks send frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from .errors import VocosClientError
from .retry import RetryPolicy, acall
from .session import (
    CONNECT_OPTIONS,
    END,
    Done,
    ReplyClock,
    StreamInfo,
    cannot_open,
    closed_after,
    closed_by,
    frame_count,
    frame_messages,
    handshake_refused,
    meaning,
    no_start,
    send_timed_out,
    sent_after_end,
    start_info,
    stream_ended,
)


class AsyncStreamSession:
    """One open stream: ``await send(frames)`` with ``(n_mels, t)`` float32 or ``(K, t)`` int frames,
    ``await end()``, and ``async for chunk in session`` for the float32 audio ``(S_i,)`` as it is final
    (from another task to overlap them). ``info``: the start message; ``samples``: the total once done."""

    def __init__(self, connection: ClientConnection, info: StreamInfo, timeout: float | None) -> None:
        self._ws = connection
        self.info = info
        self.timeout = timeout
        self.samples: int | None = None
        self._error: VocosClientError | None = None
        self._ended = False  # the iteration has seen the done message, or raised the stream's error
        self._end_sent = False
        self._closed = False  # by close(): what the receiver sees then is no fault of the server
        self._clock = ReplyClock(timeout, info.lookahead_frames)
        self._chunks: asyncio.Queue[np.ndarray | Done | VocosClientError] = asyncio.Queue()
        self._receiver = asyncio.create_task(self._receive())

    async def send(self, frames: np.ndarray) -> None:
        """Frames ``(C, t)`` (or ``(1, C, t)``), ``t >= 1``: mel floats or EnCodec codes."""
        messages = frame_messages(frames, self.info.max_message_bytes)
        self._clock.sending(frame_count(frames))
        for message in messages:
            await self._send(message)
        self._clock.sent()

    async def end(self) -> None:
        """No more frames: the server flushes the rest of the audio and says done."""
        await self._send(END)
        self._end_sent = True
        self._clock.ended()

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        while not self._ended:  # iterated again after the end: nothing more (or the stream's error again)
            try:
                item = await asyncio.wait_for(self._chunks.get(), self._clock.wait())
            except TimeoutError:
                if self._clock.expired():
                    raise self._clock.error() from None
                continue
            self._clock.heard()
            if isinstance(item, Done | VocosClientError):
                self._ended = True
                # Back for another loop over this session waiting at the same time: it ends too, where it waited for
                # the client's timeout (for ever with None) for a message that had come to this one.
                self._chunks.put_nowait(item)
            if isinstance(item, Done):
                return
            if isinstance(item, VocosClientError):
                raise item
            yield item
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        self._closed = True  # before the close, which ends the receiver
        await self._ws.close()
        # asyncio.wait, not await: the receiver may itself be cancelled (asyncio.run's shutdown cancels every
        # task), and suppressing that CancelledError around an await swallowed the caller's own cancellation too.
        await asyncio.wait([self._receiver])

    async def _send(self, message: bytes | str) -> None:
        if self._error is not None:
            raise self._error
        if self.samples is not None:
            raise stream_ended()
        if self._end_sent:
            raise sent_after_end()
        try:
            # Bounded as the sync session's send is: websockets waits for a server that stopped reading until its
            # keepalive gives up (40 s and more), whatever the client's timeout.
            await asyncio.wait_for(self._ws.send(message), self.timeout)
        except TimeoutError:
            # Its frame may be half sent, so the stream cannot go on; dropped, as a close handshake with a server
            # that reads nothing would wait websockets' close timeout (10 s) first.
            self._ws.transport.abort()
            raise send_timed_out(self.timeout, self._error) from None
        except ConnectionClosed as exc:
            await asyncio.wait([self._receiver], timeout=self.timeout)  # it has the server's reason, if any
            raise self._error or closed_by(exc) from None

    async def _receive(self) -> None:
        fmt = self.info.format
        try:
            async for message in self._ws:
                item = meaning(message, fmt)
                if isinstance(item, Done):
                    self.samples = item.samples
                self._chunks.put_nowait(item)
                if isinstance(item, Done):
                    return
        except VocosClientError as exc:
            self._fail(exc)
            return
        except WebSocketException:
            pass
        self._fail(closed_after(self._ws.protocol, self._closed))

    def _fail(self, error: VocosClientError) -> None:
        self._error = error
        self._chunks.put_nowait(error)


@contextlib.asynccontextmanager
async def session(url: str, headers: dict[str, str], timeout: float | None,
                  retry: RetryPolicy) -> AsyncIterator[AsyncStreamSession]:
    """``async with session(url, ...) as s``: connected, the start message read (tried again as ``retry``
    says while the server refuses for now); closed at the end."""
    stream = await acall(retry, lambda: _open(url, headers, timeout))
    try:
        yield stream
    finally:
        await stream.aclose()


async def _open(url: str, headers: dict[str, str], timeout: float | None) -> AsyncStreamSession:
    try:
        connection = await connect(url, additional_headers=headers, open_timeout=timeout, **CONNECT_OPTIONS)
    except InvalidStatus as exc:
        raise handshake_refused(exc) from None
    except (TimeoutError, OSError, WebSocketException) as exc:
        raise cannot_open(url, exc) from None
    try:
        return AsyncStreamSession(connection, start_info(await asyncio.wait_for(connection.recv(), timeout)), timeout)
    except TimeoutError:
        await connection.close()
        raise no_start(timeout) from None
    except ConnectionClosed as exc:
        raise closed_by(exc) from None
    except BaseException:
        await connection.close()
        raise


async def frames_to_audio(opened: contextlib.AbstractAsyncContextManager[AsyncStreamSession],
                          frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
                          ) -> AsyncGenerator[np.ndarray, None]:
    """Send ``frames`` (sync or async iterable) from a task, then end, while yielding the audio chunks.
    An exception of the producer is raised here once the stream is closed."""
    async with opened as stream:
        failure: list[BaseException] = []  # the producer's error, recorded before it closes the stream
        sender = asyncio.create_task(_produce(stream, frames, failure))
        try:
            async for chunk in stream:
                yield chunk
            await sender
        except VocosClientError:
            # The producer's own error (its frames, or a message the client refused) when it failed first, else
            # the stream's (the server's error, a timeout): a producer still going is then not waited for.
            if failure and isinstance(failure[0], Exception):
                raise failure[0] from None
            raise
        finally:
            if not sender.done():
                sender.cancel()
            elif not sender.cancelled():
                # Its error is raised above (or the stream's instead): retrieved, so that asyncio does not log
                # "Task exception was never retrieved" for every failed producer.
                sender.exception()


async def _produce(stream: AsyncStreamSession, frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
                   failure: list[BaseException]) -> None:
    try:
        if isinstance(frames, AsyncIterable):
            async for chunk in frames:
                await stream.send(chunk)
        else:
            for chunk in frames:
                await stream.send(chunk)
        await stream.end()
    except BaseException as exc:
        failure.append(exc)
        await stream.aclose()  # ends the consumer's iteration
        raise
