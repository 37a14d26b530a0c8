"""The learning-rate schedule of the recipe: linear warm-up, then a half cosine to zero.

The same multiplier as ``transformers.get_cosine_schedule_with_warmup`` (the reference's), written
here so that training does not need transformers for one formula.
"""

from __future__ import annotations

import math

import torch


def cosine_with_warmup(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    """Learning-rate multiplier at ``step``: ``step / warmup`` during warm-up, then ``0.5 (1 + cos(pi p))``."""
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_schedule_with_warmup(optimizer: torch.optim.Optimizer, num_warmup_steps: int,
                                num_training_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, num_warmup_steps, num_training_steps))
