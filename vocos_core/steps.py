"""Work cut into steps: a generator that yields after each unit of work and returns its result.

The audio analysis of a long upload (the EnCodec encoder over minutes of audio) takes seconds; run
in one call it would hold up every other use of the model thread, stream steps included. Written as
a :data:`Steps` generator, its caller runs as many units as fit in a time budget
(:func:`advance`), lets other work run, and comes back. The units are the same whichever budget is
used, so the result is the same to the bit.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")

# Yields None after each unit of work; returns the result (``StopIteration.value``).
Steps = Generator[None, None, T]


def run_steps(steps: Steps[T]) -> T:
    """Every unit of ``steps`` in one go; its result."""
    done, result = advance(steps, None)
    assert done
    return result  # type: ignore[return-value]


def advance(steps: Steps[T], budget_s: float | None) -> tuple[bool, T | None]:
    """Run units of ``steps`` while the next one should still end within ``budget_s`` seconds of the
    first (at least one unit; all of them for ``None``): ``(True, result)`` once it is done, else
    ``(False, None)``.

    The next unit is assumed to last as long as the longest so far. The units run in the caller's
    autograd mode (e.g. ``torch.inference_mode()`` around the call): a generator must not hold a mode
    across a yield, while its thread runs other work.
    """
    start = time.monotonic()
    longest = 0.0
    while True:
        unit_start = time.monotonic()
        try:
            next(steps)
        except StopIteration as finished:
            return True, finished.value
        now = time.monotonic()
        longest = max(longest, now - unit_start)
        if budget_s is not None and now + longest - start > budget_s:
            return False, None
