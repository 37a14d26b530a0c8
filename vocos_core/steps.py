"""Work cut into steps: a generator that yields after each unit of work, with the output it made final.

The audio analysis of a long upload (the EnCodec encoder over minutes of audio) takes seconds; run
in one call it would hold up every other use of the model thread, stream steps included, and its
first frames would wait for its last. Written as :data:`Steps`, its caller runs as many units as fit
in a time budget (:func:`advance`), lets other work run, comes back, and can use each piece of the
output as soon as it is out. The units are the same whichever budget is used, so the output is too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import torch

# Yields after each unit of work: None, or the piece ``(..., t)`` of the output that the unit made
# final. The output is the pieces joined on the last axis (time).
Steps = Generator[torch.Tensor | None, None, None]


def run_steps(steps: Steps) -> torch.Tensor:
    """Every unit of ``steps`` in one go: the whole output."""
    done, pieces = advance(steps, None)
    assert done and pieces, "steps that gave no output"
    return join(pieces)


def advance(steps: Steps, budget_s: float | None) -> tuple[bool, list[torch.Tensor]]:
    """Run units of ``steps`` while the next one should still end within ``budget_s`` seconds of the
    first (at least one unit; all of them for ``None``): whether they are done, and the pieces of
    output they gave.

    The next unit is assumed to last as long as the longest so far. The units run in the caller's
    autograd mode (e.g. ``torch.inference_mode()`` around the call): a generator must not hold a mode
    across a yield, while its thread runs other work.
    """
    start = unit_start = time.monotonic()
    longest = 0.0
    pieces: list[torch.Tensor] = []
    for piece in steps:
        now = time.monotonic()
        longest = max(longest, now - unit_start)
        if piece is not None:
            pieces.append(piece)
        if budget_s is not None and now + longest - start > budget_s:
            return False, pieces
        unit_start = now
    return True, pieces


def join(pieces: list[torch.Tensor]) -> torch.Tensor:
    """Pieces of output ``[(..., t_i)]`` -> ``(..., sum t_i)``."""
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


def mapped(steps: Steps, fn: Callable[[torch.Tensor], torch.Tensor]) -> Steps:
    """``steps`` with ``fn`` applied to each piece of output (``fn`` must act on each frame alone)."""
    for piece in steps:
        yield None if piece is None else fn(piece)
