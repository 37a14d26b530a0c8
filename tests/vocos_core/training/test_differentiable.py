"""The generator trains through autograd, on paths equal to the inference-optimised ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vocos_core.pretrained import Vocos
from vocos_core.testing import write_random_checkpoint

VARIANTS = [("mel", "convnext", "istft"), ("mel", "resnet", "imdct_cos"), ("encodec", "convnext", "imdct_symexp"),
            ("hifigan-mel", "convnext", "istft")]


@pytest.mark.parametrize(("kind", "backbone", "head"), VARIANTS)
def test_grad_path_equals_inference_path_and_has_gradients(tmp_path: Path, kind: str, backbone: str,
                                                           head: str) -> None:
    model = Vocos.from_pretrained(write_random_checkpoint(tmp_path, kind, backbone=backbone, head=head))  # type: ignore[arg-type]
    x = torch.randn(2, model.n_features, 12, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([1]) if kind == "encodec" else None
    with torch.inference_mode():
        expected = model.head(model.backbone(x, bandwidth_id=ids))
    model.train()
    audio = model.head(model.backbone(x, bandwidth_id=ids))
    assert isinstance(audio, torch.Tensor) and isinstance(expected, torch.Tensor)
    torch.testing.assert_close(audio.detach(), expected, rtol=1e-5, atol=1e-6)
    audio.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [], f"no gradient reached {missing}"
