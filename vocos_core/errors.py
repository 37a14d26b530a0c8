"""Exceptions raised by vocos_core.

Everything a caller can cause (a bad checkpoint, bad input) raises a subclass of ``VocosError``
with a message that says what was expected, so a service can map each class to a status code.
"""

from __future__ import annotations


class VocosError(Exception):
    """Base class of every error vocos_core raises on purpose."""


class CheckpointError(VocosError):
    """A checkpoint or its config is missing, malformed, or does not match the model it declares."""


class UnavailableError(CheckpointError):
    """A checkpoint file that is not on this machine and cannot be fetched now (offline, or the Hub or
    download URL unreachable).

    ``reason`` is the message without the advice that ends it, for a caller (the service) that gives
    advice of its own in its own terms.
    """

    def __init__(self, reason: str, advice: str) -> None:
        super().__init__(f"{reason}; {advice}")
        self.reason = reason


class UnsupportedError(CheckpointError):
    """The checkpoint asks for a component this package does not implement."""


class InputError(VocosError, ValueError):
    """Input tensors of the wrong rank, shape, dtype or value range."""
