"""Exceptions raised by vocos_core.

Everything a caller can cause (a bad checkpoint, bad input) raises a subclass of ``VocosError``
with a message that says what was expected, so a service can map each class to a status code.
"""

from __future__ import annotations


class VocosError(Exception):
    """Base class of every error vocos_core raises on purpose."""


class CheckpointError(VocosError):
    """A checkpoint or its config is missing, malformed, or does not match the model it declares."""


class UnsupportedError(CheckpointError):
    """The checkpoint asks for a component this package does not implement."""


class InputError(VocosError, ValueError):
    """Input tensors of the wrong rank, shape, dtype or value range."""
