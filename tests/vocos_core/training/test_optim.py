"""The learning-rate schedule and the mel-coefficient decay: the reference's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from vocos_core.training.optim import cosine_schedule_with_warmup, cosine_with_warmup


def test_warm_up_is_linear_then_a_half_cosine_to_zero() -> None:
    assert cosine_with_warmup(0, 10, 110) == 0.0
    assert cosine_with_warmup(5, 10, 110) == 0.5
    assert cosine_with_warmup(10, 10, 110) == 1.0
    assert cosine_with_warmup(60, 10, 110) == pytest.approx(0.5)
    assert cosine_with_warmup(110, 10, 110) == pytest.approx(0.0, abs=1e-12)
    # past the end the cosine rises again, as transformers' does (training stops at the end)
    assert cosine_with_warmup(210, 10, 110) == pytest.approx(1.0)
    assert cosine_with_warmup(35, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_the_scheduler_applies_it_to_the_optimiser() -> None:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_schedule_with_warmup(opt, 0, 4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [2.0 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx(expected)
