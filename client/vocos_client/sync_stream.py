"""A WebSocket stream from a thread-based program: frames go out from the caller's thread, audio comes in
on a receiver thread, so a TTS producer can push while its audio is played."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from .errors import VocosClientError
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


class StreamSession:
    """One open stream. ``send(frames)`` with ``(n_mels, t)`` float32 or ``(K, t)`` int frames, ``end()``
    when the utterance is complete, and iterate for the float32 audio chunks ``(S_i,)`` as they are final.
    ``info`` is the server's start message; ``samples`` the total, once done. Server errors raise
    :class:`VocosClientError` from ``send`` or from the iteration."""

    def __init__(self, connection: ClientConnection, timeout: float | None) -> None:
        self._ws = connection
        self.timeout = timeout
        self.info: StreamInfo = start_info(connection.recv(timeout))
        self.samples: int | None = None
        self._error: VocosClientError | None = None
        self._ended = False  # the iteration has seen the done message, or raised the stream's error
        self._end_sent = False
        self._closed = False  # by close(): what the receiver sees then is no fault of the server
        self._clock = ReplyClock(timeout, self.info.lookahead_frames)
        self._chunks: queue.Queue[np.ndarray | Done | VocosClientError] = queue.Queue()
        self._receiver = threading.Thread(target=self._receive, name="vocos-stream-receiver", daemon=True)
        self._receiver.start()

    def send(self, frames: np.ndarray) -> None:
        """Frames ``(C, t)`` (or ``(1, C, t)``), ``t >= 1``: mel floats or EnCodec codes."""
        messages = frame_messages(frames, self.info.max_message_bytes)
        self._clock.sending(frame_count(frames))
        for message in messages:
            self._send(message)
        self._clock.sent()

    def end(self) -> None:
        """No more frames: the server flushes the rest of the audio and says done."""
        self._send(END)
        self._end_sent = True
        self._clock.ended()

    def __iter__(self) -> Iterator[np.ndarray]:
        while not self._ended:  # iterated again after the end: nothing more (or the stream's error again)
            try:
                item = self._chunks.get(timeout=self._clock.wait())
            except queue.Empty:
                if self._clock.expired():
                    raise self._clock.error() from None
                continue
            self._clock.heard()
            if isinstance(item, Done | VocosClientError):
                self._ended = True
                # Back for another loop over this session waiting at the same time: it ends too, where it waited for
                # the client's timeout (for ever with None) for a message that had come to this one.
                self._chunks.put(item)
            if isinstance(item, Done):
                return
            if isinstance(item, VocosClientError):
                raise item
            yield item
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._closed = True  # before the close, which ends the receiver
        self._ws.close()
        self._receiver.join(10)

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, message: bytes | str) -> None:
        if self._error is not None:
            raise self._error
        if self.samples is not None:
            raise stream_ended()
        if self._end_sent:
            raise sent_after_end()
        try:
            self._ws.send(message)
        except ConnectionClosed as exc:
            # The socket's timeout (open_session); websockets' own "timed out while closing" is a TimeoutError too,
            # after the server began to close with its reason, which send_timed_out then gives.
            if isinstance(exc.__cause__, TimeoutError):
                raise send_timed_out(self.timeout, self._error) from None
            self._receiver.join(self.timeout)  # the receiver has the server's reason, if it sent one
            raise self._error or closed_by(exc) from None

    def _receive(self) -> None:
        fmt = self.info.format
        try:
            for message in self._ws:
                item = meaning(message, fmt)
                if isinstance(item, Done):
                    self.samples = item.samples
                self._chunks.put(item)
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
        self._chunks.put(error)


def open_session(url: str, headers: dict[str, str], timeout: float | None) -> StreamSession:
    """Connect and read the start message; a refused handshake raises :class:`VocosClientError`."""
    try:
        # legacy=True: the session owns the connection and closes it (websockets 17.1 wants a with-block otherwise)
        connection = connect(url, additional_headers=headers, open_timeout=timeout, legacy=True, **CONNECT_OPTIONS)
    except InvalidStatus as exc:
        raise handshake_refused(exc) from None
    except (OSError, WebSocketException) as exc:
        raise cannot_open(url, exc) from None
    # websockets' sync send has no timeout of its own: with a server that stopped reading (stopped, partitioned,
    # overloaded) send() sat in sendall for ever holding the connection's lock, so close() and the keepalive ping
    # waited for ever too. The socket's timeout bounds each write; its reads come after select(), so never wait.
    # OSError: the server closed it already (e.g. after its error message at the stream limit); reading says why.
    with contextlib.suppress(OSError):
        connection.socket.settimeout(timeout)
    try:
        return StreamSession(connection, timeout)
    except TimeoutError:
        connection.close()
        raise no_start(timeout) from None
    except ConnectionClosed as exc:
        raise closed_by(exc) from None
    except BaseException:
        connection.close()
        raise


def frames_to_audio(opener: Callable[[], StreamSession],
                    frames: Iterable[np.ndarray]) -> Generator[np.ndarray, None, None]:
    """Open a session (on the first ``next``), send ``frames`` from a thread (then end) while yielding the audio
    chunks; the session closes at the end.
    An exception of the producer (``frames`` itself failed) is raised here, after the stream is closed."""
    session = opener()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for chunk in frames:
                session.send(chunk)
            session.end()
        except BaseException as exc:  # raised by the consumer below
            failure.append(exc)
            session.close()  # ends the consumer's iteration

    sender = threading.Thread(target=produce, name="vocos-stream-sender", daemon=True)
    sender.start()
    with session:
        try:
            yield from session
        except VocosClientError:
            # The producer's own error (its frames, or a message the client refused) when it failed first: it
            # records it before it closes the session. Read before this block closes it, which would make a
            # producer still going fail too.
            if failure:
                raise failure[0] from None
            raise
    # Done: the sender has sent its end. A consumer that leaves early (break) closes the session and does not
    # wait for the sender, which may be inside the caller's generator for as long as that takes.
    sender.join(session.timeout)
    if failure:
        raise failure[0]
