"""Quoting what a client sent (header values, names) in messages, clipped: an error body must not grow
with a 100 KB header, nor repeat it into the logs."""

from __future__ import annotations

ECHO_CHARS = 80


def clip(value: str, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` when ``value`` is at most ``limit`` characters, else its first ``limit`` characters,
    an ellipsis and its length: ``'text/plain; aaaa…' (100012 characters)``."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"
