"""What each optimiser step is made of: the discriminators' gradients are their own loss's alone, windows of
accumulated batches run across epochs, a resumed run's learning rate and mel coefficient are its schedule's,
and settings that cannot train are refused at start in one line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import Logger

from vocos_core.training.callbacks import GradNormCallback
from vocos_core.training.cli import main
from vocos_core.training.data import DataConfig, VocosDataModule
from vocos_core.training.experiment import VocosExp

from .training_helpers import CONFIGS, tiny_config

# Lightning fits with the full-size discriminators: seconds each on 2 CPU cores.
pytestmark = pytest.mark.slow


def tiny_run(tmp: Path, **model: Any) -> tuple[VocosExp, VocosDataModule]:
    """vocos.yaml at tiny sizes over a tiny corpus of 4 files, 2 batches of 2 per epoch."""
    config = yaml.safe_load(tiny_config("vocos.yaml", tmp, extra_model=model).read_text(encoding="utf-8"))
    data = config["data"]["init_args"]
    config["model"]["initial_learning_rate"] = float(config["model"]["initial_learning_rate"])  # YAML 1.1: "5e-4"
    return VocosExp(**config["model"]), VocosDataModule(DataConfig(**data["train_params"]),
                                                        DataConfig(**data["val_params"]))


def trainer(tmp: Path, max_steps: int, *callbacks: L.Callback, **options: Any) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, limit_val_batches=0, num_sanity_val_steps=0,
                     logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp),
                     callbacks=list(callbacks), **options)


def discriminators(module: VocosExp) -> list[torch.nn.Parameter]:
    return [*module.multiperioddisc.parameters(), *module.multiresddisc.parameters()]


class GradientsLeft(L.Callback):
    """After each batch: how many discriminator parameters hold a gradient (for their next step)."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: VocosExp, *args: Any) -> None:  # type: ignore[override]
        self.counts.append(sum(p.grad is not None for p in discriminators(module)))


def test_the_generators_pass_leaves_no_gradient_on_the_discriminators(tmp_path: Path) -> None:
    """Its backward went through them and left gradients that their next step added to their own loss's."""
    module, data = tiny_run(tmp_path)
    probe = GradientsLeft()
    trainer(tmp_path, 4, probe).fit(module, data)
    assert probe.counts == [0, 0]
    assert all(p.requires_grad for p in discriminators(module))  # switched back on after each pass


class Steps(L.Callback):
    """The optimisers' step counts after each batch."""

    def __init__(self) -> None:
        self.after: list[int] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: VocosExp, *args: Any) -> None:  # type: ignore[override]
        self.after.append(trainer.global_step)


class LoggedSteps(Logger):
    """Which steps each metric reached the logger at."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[str, list[int | None]] = {}

    @property
    def name(self) -> str:
        return "steps"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key in metrics:
            self.steps.setdefault(key, []).append(step)

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_every_batch_logs_the_generators_losses(tmp_path: Path) -> None:
    """Those of each epoch's first batch were lost: Lightning drops what a training step logged before a
    backward pass whose hook logs (the configs' GradNormCallback), on an epoch's first batch."""
    module, data = tiny_run(tmp_path)
    logger = LoggedSteps()
    L.Trainer(accelerator="cpu", devices=1, max_steps=8, limit_val_batches=0, num_sanity_val_steps=0, logger=logger,
              log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
              default_root_dir=str(tmp_path), callbacks=[GradNormCallback()]).fit(module, data)
    for key in ("generator/mel_loss", "generator/total_loss", "generator/multi_period_loss", "mel_loss_coeff",
                "discriminator/total", "grad_norm"):
        assert logger.steps.get(key) == [0, 1, 2, 3], key  # 2 epochs of 2 batches


def test_accumulated_windows_run_across_epochs(tmp_path: Path) -> None:
    """Windows of 3 batches over epochs of 2: the count restarted each epoch, so no window ever closed."""
    module, data = tiny_run(tmp_path, accumulate_grad_batches=3)
    probe = Steps()
    trainer(tmp_path, 4, probe, max_epochs=4).fit(module, data)
    assert probe.after == [0, 0, 2, 2, 2, 4]  # both optimisers step after batches 3 and 6


class FirstLearningRate(L.Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.rates:
            self.rates = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]


def test_a_run_resumed_under_a_longer_schedule_starts_at_its_learning_rate(tmp_path: Path) -> None:
    """It started at the rate of the checkpoint's schedule (0 at its end) for its first batch."""
    module, data = tiny_run(tmp_path)
    first = trainer(tmp_path, 4)
    first.fit(module, data)
    first.save_checkpoint(tmp_path / "end.ckpt")
    assert [g["lr"] for opt in first.optimizers for g in opt.param_groups] == [0.0, 0.0]  # cosine to 0 at 2 batches
    module, data = tiny_run(tmp_path)
    probe = FirstLearningRate()
    trainer(tmp_path, 8, probe).fit(module, data, ckpt_path=tmp_path / "end.ckpt")
    peak = module.hparams["initial_learning_rate"]
    assert probe.rates == pytest.approx([peak * 0.5] * 2)  # batch 2 of 4: half way down the cosine


def test_a_run_resumed_under_another_learning_rate_follows_it(tmp_path: Path) -> None:
    """The checkpoint's peak learning rate stayed (its schedulers' base rates), whatever the config said."""
    module, data = tiny_run(tmp_path)
    first = trainer(tmp_path, 4)
    first.fit(module, data)
    first.save_checkpoint(tmp_path / "end.ckpt")
    module, data = tiny_run(tmp_path, initial_learning_rate=0.01)
    probe = FirstLearningRate()
    trainer(tmp_path, 8, probe).fit(module, data, ckpt_path=tmp_path / "end.ckpt")
    assert probe.rates == pytest.approx([0.01 * 0.5] * 2)  # batch 2 of 4: half way down the cosine


def test_a_resumed_run_decays_the_mel_coefficient_from_its_first_batch() -> None:
    module = VocosExp(**{**yaml.safe_load((CONFIGS / "vocos.yaml").read_text(encoding="utf-8"))["model"],
                         "decay_mel_coeff": True})
    module._trainer = SimpleNamespace(max_steps=220, global_step=110)  # type: ignore[assignment]  # 55 of 110
    try:
        module.on_train_batch_start(torch.zeros(1), 0)
        assert module.mel_loss_coeff == pytest.approx(45 * 0.5)  # half way down the half cosine (no warm-up)
    finally:
        module._trainer = None


@pytest.mark.parametrize(("flags", "message"), [
    (["--trainer.max_steps", "-1"], "trainer.max_steps is -1: set it"),
    (["--model.accumulate_grad_batches", "0"], "model.accumulate_grad_batches is 0: expected a whole number >= 1"),
    (["--model.sample_rate", "16000"], "model.sample_rate 16000 is not the feature extractor's sample_rate 24000"),
    (["--data.init_args.train_params.sampling_rate", "16000"],
     "data.init_args.train_params.sampling_rate 16000 is not the model's sample rate 24000"),
    (["--data.init_args.val_params.num_samples", "5000"],
     "data.init_args.val_params.num_samples 5000: expected a multiple of the hop (256 samples), at least 2048"),
    (["--data.init_args.train_params.num_samples", "512"], "train_params.num_samples 512: expected a multiple"),
])
def test_settings_that_cannot_train_stop_the_run_in_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
    config = tiny_config("vocos.yaml", tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(config), *flags])
    text = str(stopped.value)
    assert text.startswith("vocos-train: ") and message in text and "\n" not in text, text


def test_resuming_a_checkpoint_of_another_model_or_none_stops_the_run_in_one_line(tmp_path: Path) -> None:
    """Lightning stopped on a page of size mismatches, a traceback for a missing file or a file of another kind,
    and resumed, unseen, a checkpoint whose front-end differs from the config's in values alone."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2, trainer={"num_sanity_val_steps": 0})
    main(["fit", "--config", str(config)])
    ckpt = str(sorted(tmp_path.glob("logs/**/checkpoints/last.ckpt"))[-1])
    torch.save({"backbone.embed.weight": torch.zeros(1)}, tmp_path / "weights.bin")
    for flags, message in [
        (["--model.backbone.init_args.dim", "8", "--model.head.init_args.dim", "8", "--ckpt_path", ckpt],
         "the checkpoint is not of this config's model: backbone.dim: checkpoint 16, config 8; head.dim: "),
        (["--model.feature_extractor.init_args.padding", "same", "--ckpt_path", ckpt],
         "feature_extractor.padding: checkpoint 'center', config 'same'"),
        (["--ckpt_path", str(tmp_path / "absent.ckpt")], "absent.ckpt: no such file"),
        (["--ckpt_path", str(tmp_path / "weights.bin")], "weights.bin: not a Lightning checkpoint"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main(["fit", "--config", str(config), "--trainer.max_steps", "4", *flags])
        text = str(stopped.value)
        assert text.startswith("vocos-train: --ckpt_path ") and message in text and "\n" not in text, text
