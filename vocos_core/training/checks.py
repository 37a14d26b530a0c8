"""What a run's settings must agree on, checked before it starts: each mistake is one line at start-up,
not a shape error deep in a loss (or, worse, a run that trains on something else than it says)."""

from __future__ import annotations

from typing import Any

from ..config import ISTFTHeadConfig
from .data import DataConfig, VocosDataModule
from .experiment import VocosExp

# The longest STFT window of the recipe's own (the multi-resolution discriminator and the validation's
# MR-STFT distance): a crop must be longer than half of it for their reflect padding.
LONGEST_WINDOW = 2048


def run_problems(model: VocosExp, data: Any, max_steps: int) -> list[str]:
    """Why ``model`` cannot be trained on ``data`` for ``max_steps``: [] when it can."""
    problems = []
    if max_steps <= 0:
        problems.append(f"trainer.max_steps is {max_steps}: set it (the learning rate and the mel coefficient "
                        "follow schedules over max_steps // 2 batches); training by epochs alone is not supported")
    accumulate = model.hparams["accumulate_grad_batches"]
    if not isinstance(accumulate, int) or accumulate < 1:
        problems.append(f"model.accumulate_grad_batches is {accumulate!r}: expected a whole number >= 1")
    fe = model.config.feature_extractor
    rate = fe.sample_rate
    if model.hparams["sample_rate"] != rate:
        problems.append(f"model.sample_rate {model.hparams['sample_rate']} is not the feature extractor's "
                        f"sample_rate {rate}")
    if isinstance(data, VocosDataModule):
        for name, cfg in (("train_params", data.train_config), ("val_params", data.val_config)):
            problems += _data_problems(f"data.init_args.{name}", cfg, rate, fe.hop_length, model)
    return problems


def _data_problems(where: str, cfg: DataConfig, rate: int, hop: int, model: VocosExp) -> list[str]:
    problems = []
    if cfg.sampling_rate != rate:
        problems.append(f"{where}.sampling_rate {cfg.sampling_rate} is not the model's sample rate {rate}: "
                        "the model would learn audio at one rate and be served at the other")
    head = model.config.head
    shortest = max(LONGEST_WINDOW, head.n_fft if isinstance(head, ISTFTHeadConfig) else 0)
    if cfg.num_samples % hop or cfg.num_samples < shortest:
        problems.append(f"{where}.num_samples {cfg.num_samples}: expected a multiple of the hop ({hop} samples), "
                        f"at least {shortest}, so that the generated crop is as long as the real one")
    return problems
