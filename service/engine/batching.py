"""Which waiting requests go into the next model call: size, padded-frames budget and length buckets.

Pure functions over frame counts, kept apart from the engine's asyncio plumbing so the policy can be
tested exhaustively on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPolicy:
    """Limits on one model call.

    max_batch_size: most requests per call.
    max_wait_s: how long the oldest waiting request may wait for company before it runs anyway.
    max_batch_frames: budget of padded frames per call, ``batch size x longest request``; a single
        request longer than the budget still runs, alone.
    bucket_ratio: longest / shortest request of one call stays at most this, so short requests are not
        padded to long ones (1.0 batches only equal lengths).
    max_queue_size: requests that may wait; beyond it ``submit`` refuses.
    """

    max_batch_size: int = 16
    max_wait_s: float = 0.005
    max_batch_frames: int = 16384
    bucket_ratio: float = 2.0
    max_queue_size: int = 256

    def __post_init__(self) -> None:
        assert self.max_batch_size >= 1 and self.max_batch_frames >= 1 and self.max_queue_size >= 1
        assert self.bucket_ratio >= 1.0 and self.max_wait_s >= 0


@dataclass(frozen=True)
class BatchPlan:
    """Indices (into the FIFO of waiting requests) of the next call, and whether it can grow no more."""

    indices: tuple[int, ...]
    full: bool
    padded_frames: int
    real_frames: int


def plan_batch(frames: Sequence[int], policy: BatchPolicy) -> BatchPlan:
    """Pick the next batch from waiting requests of ``frames[i]`` frames each, oldest first.

    The oldest request always runs; later ones join in arrival order while the batch stays within
    ``max_batch_size``, ``max_batch_frames`` (counted on the longest member) and ``bucket_ratio``.
    A request that does not fit is skipped, not a barrier, so a shorter one behind it may still join.
    """
    assert frames, "plan_batch needs at least one waiting request"
    chosen = [0]
    lo = hi = frames[0]
    for index in range(1, len(frames)):
        if len(chosen) >= policy.max_batch_size:
            break
        t = frames[index]
        new_lo, new_hi = min(lo, t), max(hi, t)
        if new_hi > policy.bucket_ratio * new_lo:
            continue
        if (len(chosen) + 1) * new_hi > policy.max_batch_frames:
            continue
        chosen.append(index)
        lo, hi = new_lo, new_hi
    size = len(chosen)
    # Full: not even one more request as long as the current longest could join, so waiting is useless.
    full = size >= policy.max_batch_size or (size + 1) * hi > policy.max_batch_frames
    real = sum(frames[i] for i in chosen)
    return BatchPlan(indices=tuple(chosen), full=full, padded_frames=size * hi, real_frames=real)
