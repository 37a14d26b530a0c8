"""Fixtures of the vocos_core tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vocos_core import matmul_ways

# With --import-mode=importlib no test folder is on sys.path; tests import `linear_helpers` and `steps_helpers`.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(params=matmul_ways.WAYS)
def matmul_way(request: pytest.FixtureRequest) -> Iterator[matmul_ways.Way]:
    """Runs a test once per CPU matmul way (vocos_core.matmul_ways), a way that cannot run on this
    machine skipped with its reason; float32 mkl matmuls again afterwards."""
    way: matmul_ways.Way = request.param
    if (reason := matmul_ways.unsupported_reason(way)) is not None:
        pytest.skip(f"{way} matmuls cannot run here: {reason}")
    matmul_ways.set_way(way)
    yield way
    matmul_ways.set_way("mkl")
    assert torch.get_float32_matmul_precision() == "highest"
