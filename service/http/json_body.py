"""JSON request bodies to arrays, in the server or in a child process of its own (``serve``).

Parsing a large JSON body holds the interpreter for its whole length (orjson, then numpy over the
nested lists), and the event loop, with the health probes, waits meanwhile. So bodies above a
small size are parsed in a child process at low CPU priority (``service.http.json_parser``): the server
itself then only copies bytes in and arrays out. This module imports nothing but orjson and numpy,
so that the child starts in a fraction of a second.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

import numpy as np
import orjson


class JsonBodyError(ValueError):
    """The body is not what was expected; ``malformed`` when it is not JSON at all (400, else 422)."""

    def __init__(self, message: str, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


def load(body: bytes) -> dict[str, Any] | str:
    """The fields of a JSON object, each nested list of numbers as an array (float64 or int64, as
    numpy infers); for a JSON value that is no object, the JSON name of its type (``"array"``)."""
    try:
        # orjson: several times faster than json; it refuses NaN and Infinity, which JSON lacks,
        # numbers beyond float64, and nesting past 1024 levels.
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JsonBodyError(f"malformed JSON body: {exc}", malformed=True) from None
    if not isinstance(value, dict):
        return json_type(value)
    return {key: to_array(item, key) if isinstance(item, list) else item for key, item in value.items()}


def to_array(value: list[Any], name: str) -> np.ndarray:
    """A nested list of numbers as an array; JsonBodyError when ragged or not numbers.

    The leaves are checked before numpy sees them: numpy makes strings one fixed-width array sized by
    the longest, so a 64 KB body of one long string and many empty ones took 1.3 GB. ``name`` is a client's
    key, quoted with repr in the messages: a newline in it would begin a forged line of a text log."""
    other = _first_non_number(value)
    if other is not None:
        raise JsonBodyError(f"{name[:40]!r} must contain only numbers (got {other} values)", malformed=False)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise JsonBodyError(
            f"{name[:40]!r} must be a rectangular nested list of numbers (rows of equal length)", malformed=False
        ) from None
    if array.dtype.kind not in "iuf":  # whole numbers beyond int64 (object)
        raise JsonBodyError(f"{name[:40]!r} must contain only numbers (got {array.dtype} values)", malformed=False)
    return array


# JSON's names for the types orjson parses to (and numpy's array for a nested list): what a client
# that never saw Python calls them.
_KINDS = {bool: "boolean", str: "string", dict: "object", type(None): "null", list: "array", int: "number",
          float: "number", np.ndarray: "array"}


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type: ``"null"``, not ``"NoneType"``."""
    return _KINDS.get(type(value), type(value).__name__)


def _first_non_number(value: list[Any]) -> str | None:
    """What the first leaf of nested lists that is no number is (``"string"``...), or None."""
    pending = [value]
    while pending:
        for item in pending.pop():
            kind = type(item)
            if kind is list:
                pending.append(item)
            elif kind is not float and kind is not int:
                return _KINDS.get(kind, kind.__name__)
    return None


def serve() -> None:
    """The child's loop: 8-byte little-endian length + body in on stdin, 8-byte length + pickled
    ``("ok", fields)``, ``("error", message, malformed)`` (the body's fault) or ``("failed", message)`` (ours)
    out on stdout, until stdin closes."""
    os.nice(10)  # the server's event loop and model come first
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while header := source.read(8):
        body = source.read(int.from_bytes(header, "little"))
        try:
            reply: tuple[Any, ...] = ("ok", load(body))
        except JsonBodyError as exc:
            reply = ("error", str(exc), exc.malformed)
        except Exception as exc:  # told to the server, which logs it as its own failure, in its format
            reply = ("failed", f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(len(data).to_bytes(8, "little") + data)
        sink.flush()


if __name__ == "__main__":
    serve()
