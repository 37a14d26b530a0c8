"""Row counts rounded up to few buckets, so oneDNN compiles few kernels; streaming segments padded to them."""

from __future__ import annotations

import pytest
import torch

from vocos_core import matmul_ways
from vocos_core.shape_buckets import MIN_STEP, PER_OCTAVE, bucket
from vocos_core.streaming.context import Segments


def test_a_bucket_holds_the_count_with_little_padding() -> None:
    for n in range(1, 5000):
        b = bucket(n)
        assert b >= n and b % MIN_STEP == 0, n
        if n >= MIN_STEP * PER_OCTAVE:
            assert (b - n) / n <= 1 / PER_OCTAVE, n
    assert bucket(0) == 0 and bucket(256) == 256


def test_few_buckets_cover_every_count() -> None:
    assert len({bucket(n) for n in range(1, 1025)}) == 32
    assert len({bucket(n) for n in range(1, 8193)}) == 56


def test_segments_are_padded_to_a_bucket_and_keep_the_same_outputs() -> None:
    contexts = [torch.randn(3, 4), torch.randn(6, 4)]
    new = [torch.randn(5, 4), torch.randn(2, 4)]
    seg = Segments.of(contexts, new, [False, True], span=6)
    laid_out = 3 + 5 + 6 + 2 + 3  # contexts, new rows, the ending stream's right padding
    assert seg.rows.shape[0] == bucket(laid_out) > laid_out
    assert torch.equal(seg.rows[laid_out:], torch.zeros(bucket(laid_out) - laid_out, 4))
    assert seg.counts == (2, 5)
    assert seg.index.tolist() == [0, 1, 8, 9, 10, 11, 12]
    assert [c.shape[0] for c in seg.contexts] == [6, 6]


def test_onednn_rows_are_padded_to_a_bucket() -> None:
    reason = matmul_ways.unsupported_reason("onednn")
    if reason is not None:
        pytest.skip(reason)
    seen: list[int] = []
    real = torch.ops.mkldnn._linear_pointwise

    def recording(x: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append(x.shape[0])
        return real(x, *args)

    layer = torch.nn.Linear(8, 3)
    x = torch.randn(21, 8)
    torch.ops.mkldnn._linear_pointwise = recording  # type: ignore[assignment]
    try:
        with torch.inference_mode():
            y = matmul_ways._onednn(x, layer)
    finally:
        torch.ops.mkldnn._linear_pointwise = real  # type: ignore[assignment]
    assert seen == [bucket(21)] and y.shape == (21, 3) and y.is_contiguous()
    torch.testing.assert_close(y, torch.nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)
