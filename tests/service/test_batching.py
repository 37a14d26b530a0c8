"""Batch formation policy: size cap, padded-frames budget, length buckets, when a batch is full."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine.batching import BatchPolicy, plan_batch


def test_oldest_always_runs_and_fifo_order_is_kept() -> None:
    plan = plan_batch([100, 90, 110, 95], BatchPolicy(max_batch_size=16))
    assert plan.indices == (0, 1, 2, 3)
    assert plan.real_frames == 395 and plan.padded_frames == 4 * 110
    assert not plan.full


def test_max_batch_size_caps_and_marks_full() -> None:
    plan = plan_batch([10] * 7, BatchPolicy(max_batch_size=4))
    assert plan.indices == (0, 1, 2, 3)
    assert plan.full


def test_length_buckets_keep_short_requests_apart_from_long_ones() -> None:
    # 1000 frames would pad the 100-frame requests tenfold; it waits for a batch of its own.
    plan = plan_batch([100, 1000, 120, 90, 1500], BatchPolicy(bucket_ratio=2.0))
    assert plan.indices == (0, 2, 3)
    plan_long = plan_batch([1000, 100, 1500, 1900, 2100], BatchPolicy(bucket_ratio=2.0))
    assert plan_long.indices == (0, 2, 3)  # 2100 / 1000 > 2


def test_bucket_ratio_one_batches_only_equal_lengths() -> None:
    assert plan_batch([50, 51, 50, 49, 50], BatchPolicy(bucket_ratio=1.0)).indices == (0, 2, 4)


def test_padded_frames_budget_skips_but_does_not_block() -> None:
    # Budget 1000: 3 x 300 fits; a 400-frame request would make it 4 x 400 = 1600, a 200 one fits.
    plan = plan_batch([300, 300, 400, 200, 300], BatchPolicy(max_batch_frames=1000, bucket_ratio=4))
    assert plan.indices == (0, 1, 3)
    assert plan.padded_frames == 900
    assert plan.full  # a fourth request of 300 frames would pass the budget


def test_a_request_over_the_budget_runs_alone() -> None:
    plan = plan_batch([5000, 10, 5000], BatchPolicy(max_batch_frames=4096, bucket_ratio=1000))
    assert plan.indices == (0,)
    assert plan.full


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.integers(1, 5000), min_size=1, max_size=40),
    size=st.integers(1, 16),
    budget=st.integers(1, 20000),
    ratio=st.floats(1.0, 8.0),
)
def test_every_plan_respects_the_policy(frames: list[int], size: int, budget: int, ratio: float) -> None:
    policy = BatchPolicy(max_batch_size=size, max_batch_frames=budget, bucket_ratio=ratio)
    plan = plan_batch(frames, policy)
    chosen = [frames[i] for i in plan.indices]
    assert plan.indices[0] == 0 and list(plan.indices) == sorted(set(plan.indices))
    assert len(chosen) <= size
    assert max(chosen) <= ratio * min(chosen)
    assert len(chosen) == 1 or len(chosen) * max(chosen) <= budget
    assert plan.padded_frames == len(chosen) * max(chosen) >= plan.real_frames == sum(chosen)


def test_plan_needs_a_request() -> None:
    with pytest.raises(AssertionError):
        plan_batch([], BatchPolicy())
