"""Pieces of the LightningModule that need no trainer run: the mel-coefficient decay, the generator copy."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from vocos_core.training.experiment import VocosExp

CONFIG = Path(__file__).resolve().parents[3] / "vocos_core" / "training" / "configs" / "vocos.yaml"


@pytest.fixture(scope="module")
def module() -> VocosExp:
    args = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["model"]
    for part in ("backbone", "head"):
        args[part]["init_args"]["dim"] = 8
    args["backbone"]["init_args"].update(intermediate_dim=24, num_layers=1)
    return VocosExp(**{**args, "num_warmup_steps": 10, "decay_mel_coeff": True})


def test_mel_coefficient_decays_as_a_half_cosine_after_warm_up(module: VocosExp) -> None:
    module._trainer = SimpleNamespace(max_steps=220)  # type: ignore[assignment]  # 110 batches
    try:
        assert module.mel_coeff_decay(5) == 1.0
        assert module.mel_coeff_decay(10) == 1.0
        assert module.mel_coeff_decay(60) == pytest.approx(0.5)
        assert module.mel_coeff_decay(35) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
        assert module.mel_coeff_decay(110) == pytest.approx(0.0, abs=1e-12)
    finally:
        module._trainer = None


def test_generator_is_a_standalone_copy_in_the_official_layout(module: VocosExp) -> None:
    generator = module.generator()
    assert set(generator.state_dict()) == set(module.generator_state_dict())
    with torch.no_grad():
        module.head.out.bias.add_(1.0)
    assert not torch.equal(generator.head.out.bias, module.head.out.bias)
