"""ConvNeXtBlock against the textbook formula, written the reference's way ((B, C, T) convs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vocos_core import modules
from vocos_core.modules import ConvNeXtBlock, MLPWorkspace


def textbook(block: ConvNeXtBlock, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """``x + gamma * pwconv2(gelu(pwconv1(norm(dwconv(x)))))``, dwconv on ``(B, C, T)``."""
    h = block.dwconv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C) -> (B, C, T) and back
    h = block.norm(h, ids) if block.adanorm else block.norm(h)
    return x + block.gamma * block.pwconv2(nn.functional.gelu(block.pwconv1(h)))


def _block(adanorm: bool) -> ConvNeXtBlock:
    torch.manual_seed(0)
    block = ConvNeXtBlock(dim=32, intermediate_dim=96, adanorm_num_embeddings=4 if adanorm else None)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.3)
    return block.eval()


@pytest.mark.parametrize("adanorm", [False, True])
@pytest.mark.parametrize("rows_per_block", [7, 1024])  # many MLP blocks (with a partial last one), or one
def test_block_matches_formula_and_leaves_input_alone(adanorm: bool, rows_per_block: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modules, "MLP_CHUNK_ROWS", rows_per_block)
    block = _block(adanorm)
    x = torch.randn(3, 20, 32)
    before = x.clone()
    ids = torch.tensor([1]) if adanorm else None
    with torch.inference_mode():
        got, expected = block(x, cond_embedding_id=ids), textbook(block, x, ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(x, before)


def test_residual_update_writes_into_its_input() -> None:
    block = _block(adanorm=False)
    x = torch.randn(2, 9, 32)
    with torch.inference_mode():
        expected = textbook(block, x, None)
        out = block.residual_update_(x, MLPWorkspace(x, 96))
    assert out is x
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ada_layer_norm_per_id_in_half_precision_takes_any_layout(dtype: torch.dtype) -> None:
    """Upstream's public module: a transposed (non-contiguous) input failed in half precision on CPU."""
    norm = modules.AdaLayerNorm(4, 16).to(dtype)
    x = torch.randn(3, 16, 5).to(dtype).transpose(1, 2)  # (B, T, C), not contiguous
    for ids in (torch.tensor([0, 1, 2]), torch.tensor([2, 2, 2])):
        assert torch.equal(norm(x, ids), norm(x.contiguous(), ids))
        for b in range(3):  # each item as a batch of one computes it
            assert torch.equal(norm(x, ids)[b], norm(x[b:b + 1], ids[b:b + 1])[0])
