"""Running ``vocos_core.steps`` work one unit per call, as the service does with a budget of zero."""

from __future__ import annotations

import torch

from vocos_core.steps import Steps, advance


def unit_by_unit(steps: Steps) -> tuple[int, list[torch.Tensor]]:
    """Run ``steps`` one unit per ``advance`` call, in inference mode: (calls, the pieces of output)."""
    calls, pieces, done = 0, [], False
    with torch.inference_mode():
        while not done:
            calls += 1
            done, new = advance(steps, 0.0)
            pieces += new
    return calls, pieces
