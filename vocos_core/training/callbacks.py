"""Callbacks of the recipe's configs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


def gradient_norm(module: torch.nn.Module, norm_type: float = 2.0) -> torch.Tensor:
    """Norm of all gradients of ``module`` together (0 when none is set)."""
    grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads]), norm_type)


class GradNormCallback(L.Callback):
    """Logs ``grad_norm`` after every backward pass, as the reference's ``vocos.helpers.GradNormCallback``."""

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        pl_module.log("grad_norm", gradient_norm(pl_module))
