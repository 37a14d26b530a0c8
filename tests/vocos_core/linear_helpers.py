"""Helpers of the matmul tests (test_bf16x3, test_matmul_ways): a seeded linear layer and its error
against float64."""

from __future__ import annotations

import torch
from torch import nn


def layer(k: int, n: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.normal_(0, k**-0.5)
        if bias:
            lin.bias.normal_(0, 1)
    return lin


def rel_error(out: torch.Tensor, x: torch.Tensor, lin: nn.Linear) -> float:
    exact = x.double() @ lin.weight.double().t()
    if lin.bias is not None:
        exact += lin.bias.double()
    return float((out.double() - exact).abs().max() / exact.abs().max())
