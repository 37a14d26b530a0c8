"""Fixtures of the vocos_core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from vocos_core import bf16x3


@pytest.fixture(params=["highest", "high"])
def matmul_precision(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test in float32 ("highest") and again with bf16x3 matmuls ("high"), the kernels
    skipped with their reason on a machine that cannot run them."""
    precision: str = request.param
    if precision == "high" and (reason := bf16x3.unsupported_reason()) is not None:
        pytest.skip(f"bf16x3 kernels cannot run here: {reason}")
    torch.set_float32_matmul_precision(precision)
    yield precision
