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


def weights_fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """``(P, 2)`` float64: sum and sum of squares of every parameter, in ``named_parameters`` order."""
    rows = [torch.stack([p.detach().double().sum(), p.detach().double().square().sum()])
            for _, p in module.named_parameters()]
    return torch.stack(rows).cpu()


class RankWeightsCheck(L.Callback):
    """At the end of fit, checks that every DDP rank holds the same weights (raises if not).

    ``dump_dir``: also write each rank's fingerprint there as ``rank<N>.pt``.
    """

    def __init__(self, dump_dir: str | None = None) -> None:
        self.dump_dir = dump_dir

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fingerprint = weights_fingerprint(pl_module)
        if self.dump_dir is not None:
            from pathlib import Path

            Path(self.dump_dir).mkdir(parents=True, exist_ok=True)
            torch.save(fingerprint, Path(self.dump_dir) / f"rank{trainer.global_rank}.pt")
        gathered = trainer.strategy.all_gather(fingerprint.to(pl_module.device))
        if trainer.world_size > 1 and not bool((gathered == gathered[0]).all()):
            raise RuntimeError("DDP ranks hold different weights at the end of training")
