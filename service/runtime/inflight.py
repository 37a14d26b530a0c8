"""The bytes held across all connections: request bodies being received, whole answers being computed,
responses not yet sent.

One budget for the whole server (``VOCOS_MAX_INFLIGHT_BYTES``), so that many connections, each
within the body limit, cannot together hold more memory than the operator allowed: a client that
uploads all but the last byte of a large body, or never reads its large response, holds its share
until a timeout, and no more than the budget is ever held that way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from service.errors import PayloadTooLargeError, ServerBusyError

# Bytes per sample of a whole answer while it is made: float32 at the answer's rate (the resampled array, and a
# wav32f body as large). A whole answer is held at once, so it counts in the server's byte budget while it is
# computed, and one larger than the budget is refused: ?sample_rate=192000 made 460 MB from a 180 kB body of
# EnCodec codes, beyond VOCOS_MAX_INFLIGHT_BYTES alone.
ANSWER_BYTES_PER_SAMPLE = 4


class InflightBytes:
    """A count of held bytes against ``limit``; the event loop is its only user, so no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def try_take(self, size: int) -> bool:
        """Take ``size`` bytes if they fit under the limit; whether they were taken."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def force_take(self, size: int) -> None:
        """Count bytes that exist already (a computed response): they count against new requests."""
        self.held += size

    def release(self, size: int) -> None:
        assert 0 <= size <= self.held, (size, self.held)
        self.held -= size

    @contextlib.contextmanager
    def answer_held(self, samples: int, request_bytes: int) -> Iterator[None]:
        """Hold a whole answer of ``samples`` while it is computed and encoded, so that answers in progress
        together stay within the budget as bodies do. One that could never fit beside its own request's
        ``request_bytes`` is 413; one that does not fit now, beside the others, is 503 with Retry-After. Both
        before any compute: a streamed answer (``?stream=true``) holds a piece at a time."""
        size = samples * ANSWER_BYTES_PER_SAMPLE
        if size + request_bytes > self.limit:
            raise PayloadTooLargeError(
                f"the answer would be {samples} samples, {size} bytes as float32, which with the request's "
                f"{request_bytes} bytes is more than this server holds for all requests at once ({self.limit} "
                "bytes, VOCOS_MAX_INFLIGHT_BYTES); ask for ?stream=true, a lower sample_rate, or send a shorter input"
            )
        if not self.try_take(size):
            raise ServerBusyError(
                f"the answer would be {size} bytes as float32 and the server holds {self.held} bytes of requests "
                f"and answers in flight, of at most {self.limit} (VOCOS_MAX_INFLIGHT_BYTES); retry shortly, or "
                "ask for ?stream=true"
            )
        try:
            yield
        finally:
            self.release(size)
