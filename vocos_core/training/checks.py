"""What a run's settings must agree on, checked before it starts: each mistake is one line at start-up,
not a shape error deep in a loss (or, worse, a run that trains on something else than it says)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..config import ISTFTHeadConfig, parse_config
from ..errors import CheckpointError
from .data import DataConfig, VocosDataModule
from .experiment import VocosExp, config_differences
from .export import hub_config, read_checkpoint

# The longest STFT window of the recipe's own (the multi-resolution discriminator and the validation's
# MR-STFT distance): a crop must be longer than half of it for their reflect padding.
LONGEST_WINDOW = 2048
# ckpt_path values that Lightning resolves itself (not a file of ours to read beforehand).
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc")
# The run folder a logger numbers itself when no version is given (or when one is given as a number).
AUTO_VERSION = re.compile(r"version_\d+")


def run_problems(model: VocosExp, data: Any, max_steps: int | None) -> list[str]:
    """Why ``model`` cannot be trained on ``data`` for ``max_steps`` (None: validated only): [] when it can."""
    problems = []
    if max_steps is not None and max_steps <= 0:
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


def resume_problems(model: VocosExp, ckpt_path: str, trainer: L.Trainer | None = None) -> list[str]:
    """Why ``model`` cannot resume ``ckpt_path``: [] when it can. Its generator must be the checkpoint's:
    Lightning would stop on the first differing shape with a page of them, and a front-end that differs
    in values alone (another mel) would be overwritten by the checkpoint's buffers, unseen."""
    if ckpt_path == "last" and trainer is not None:
        found, problems = last_checkpoint(trainer)
        if found is None:
            return problems
        ckpt_path = found
    if ckpt_path in LIGHTNING_CKPT_NAMES or ckpt_path.startswith("registry") or "://" in ckpt_path:
        return []
    try:
        data = read_checkpoint(ckpt_path)
    except CheckpointError as exc:  # names the file
        return [f"--ckpt_path {exc}"]
    try:
        saved = parse_config(hub_config(dict(data["hyper_parameters"])), where="its hyperparameters")
    except CheckpointError as exc:
        return [f"--ckpt_path {ckpt_path}: {exc}"]
    differences = config_differences(saved, model.config)
    if differences:
        return [f"--ckpt_path {ckpt_path}: the checkpoint is not of this config's model: " + "; ".join(differences)
                + "; resume with the run's own config (config.yaml beside its logs), or start a new run from its "
                "generator (vocos-train export, then --init-from)"]
    return []


def last_checkpoint(trainer: L.Trainer) -> tuple[str | None, list[str]]:
    """The checkpoint that ``--ckpt_path last`` resumes (the newest ``last*.ckpt`` of the run's checkpoint folders),
    or None, and why the run cannot start. With none, Lightning trains from scratch after a warning: right for the
    first run of a job that passes ``last`` every time under a logger version it names, but not after an earlier
    run whose checkpoints the configs' logger left in another ``version_N`` folder, the case that stops. A folder
    the run names itself (``--trainer.logger.init_args.version ft``) is the job's own: runs beside it are others'."""
    found: set[str] = set()
    folders: list[Path] = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            found |= callback._find_last_checkpoints(trainer)  # Lightning's own search for "last"
            folders.append(Path(callback.dirpath or Path(trainer.log_dir or trainer.default_root_dir, "checkpoints")))
    if found:
        local = [c for c in found if "://" not in c]  # a remote one is Lightning's to pick, unchecked
        return (max(local, key=lambda c: Path(c).stat().st_mtime) if local else None), []
    numbered = [f for f in folders if "://" not in str(f) and AUTO_VERSION.fullmatch(f.parent.name)]
    others = [c for f in numbered for c in f.parent.parent.glob("*/checkpoints/last*.ckpt")]
    if not others:
        return None, []
    newest = max(others, key=lambda c: c.stat().st_mtime)
    return None, [f"--ckpt_path last: no last checkpoint in {', '.join(map(str, folders))}: this run logs to a new "
                  f"version_N folder, and earlier runs' checkpoints are in theirs; expected the path of the checkpoint "
                  f"to resume, e.g. {newest} (or, for a job that passes last every time, a folder of its own: "
                  "--trainer.logger.init_args.version NAME)"]
