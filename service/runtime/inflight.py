"""The bytes held across all connections: request bodies being received, whole answers being computed,
responses not yet sent.

One budget for the whole server (``VOCOS_MAX_INFLIGHT_BYTES``), so that many connections, each
within the body limit, cannot together hold more memory than the operator allowed: a client that
uploads all but the last byte of a large body, or never reads its large response, holds its share
until a timeout, and no more than the budget is ever held that way.
"""

from __future__ import annotations


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
