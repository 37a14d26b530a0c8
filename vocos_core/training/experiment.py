"""The Vocos GAN recipe as a LightningModule, as vocos 0.1.0's ``VocosExp`` / ``VocosEncodecExp``.

The generator's three parts are vocos_core's own modules, built from the same ``class_path`` /
``init_args`` mappings a Hub ``config.yaml`` holds, and kept under the attribute names
``feature_extractor``, ``backbone`` and ``head``: the generator's part of this module's state dict
is an official checkpoint as it is (:mod:`.export`).

Two optimisers (discriminators, generator) stepped by hand each batch, as Lightning 1.x stepped the
reference's: ``trainer.max_steps`` counts both, so ``max_steps // 2`` batches train.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import lightning as L
import torch
from torch.optim.lr_scheduler import LRScheduler

from ..config import EncodecFeaturesConfig, VocosConfig, parse_config
from ..errors import CheckpointError
from ..feature_extractors import EncodecFeatures
from ..pretrained import Vocos
from .discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from .loss import DiscriminatorLoss, FeatureMatchingLoss, GeneratorLoss, MelSpecReconstructionLoss
from .optim import cosine_schedule_with_warmup
from .phase_loss import PhaseDerivativeLoss
from .validation import ValidationMixin

GENERATOR_PARTS = ("feature_extractor", "backbone", "head")
PROGRESS_BAR = ("discriminator/total", "generator/total_loss", "generator/mel_loss")
# A config.yaml section: {"class_path": "vocos....", "init_args": {...}}. Typed so that LightningCLI keeps
# it as data: a mapping typed Any holding a class_path would be imported and instantiated by jsonargparse.
ComponentSpec = dict[str, str | dict[str, Any]]


def config_differences(checkpoint: VocosConfig, config: VocosConfig) -> list[str]:
    """``"section.field: checkpoint X, config Y"`` for each hyperparameter in which the two differ."""
    out = []
    for section in ("feature_extractor", "backbone", "head"):
        ours, theirs = getattr(config, section), getattr(checkpoint, section)
        if type(ours) is not type(theirs):
            out.append(f"{section}: checkpoint {type(theirs).__name__}, config {type(ours).__name__}")
            continue
        out += [f"{section}.{f.name}: checkpoint {getattr(theirs, f.name)!r}, config {getattr(ours, f.name)!r}"
                for f in dataclasses.fields(ours) if getattr(ours, f.name) != getattr(theirs, f.name)]
    return out


class VocosExp(ValidationMixin, L.LightningModule):
    """Generator (feature extractor, backbone, head), MPD + MRD, hinge GAN + feature matching + mel L1."""

    def __init__(self, feature_extractor: ComponentSpec, backbone: ComponentSpec, head: ComponentSpec,
                 sample_rate: int, initial_learning_rate: float, num_warmup_steps: int = 0,
                 mel_loss_coeff: float = 45.0, mrd_loss_coeff: float = 1.0, pretrain_mel_steps: int = 0,
                 decay_mel_coeff: bool = False, evaluate_utmos: bool = False, evaluate_pesq: bool = False,
                 evaluate_periodicty: bool = False, accumulate_grad_batches: int = 1,
                 encodec_weights: str | None = None, phase_loss_coeff: float = 0.0) -> None:
        """Arguments as the reference's, plus ``accumulate_grad_batches`` (Lightning's own option does
        not apply to manual optimisation), ``encodec_weights`` (the EnCodec file, EnCodec variant only)
        and ``phase_loss_coeff`` (weight of :class:`.phase_loss.PhaseDerivativeLoss`, not in the
        reference recipe: 0 leaves it out)."""
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.config = parse_config({"feature_extractor": feature_extractor, "backbone": backbone, "head": head},
                                   where="model init_args")
        generator = Vocos(self.config, encodec_weights)
        self.feature_extractor = generator.feature_extractor
        self.backbone = generator.backbone
        self.head = generator.head
        generator.train()  # Vocos() starts in eval mode, for inference
        n = self.num_bandwidths or None
        self.multiperioddisc = MultiPeriodDiscriminator(num_embeddings=n)
        self.multiresddisc = MultiResolutionDiscriminator(num_embeddings=n)
        self.disc_loss = DiscriminatorLoss()
        self.gen_loss = GeneratorLoss()
        self.feat_matching_loss = FeatureMatchingLoss()
        self.melspec_loss = MelSpecReconstructionLoss(sample_rate=sample_rate)
        self.phase_loss = PhaseDerivativeLoss()
        self.base_mel_coeff = self.mel_loss_coeff = mel_loss_coeff
        self.batches_in_window = 0  # batches whose gradients wait for the next optimiser step

    # -- the generator -----------------------------------------------------------------------------

    @property
    def num_bandwidths(self) -> int:
        fe = self.config.feature_extractor
        return len(fe.bandwidths) if isinstance(fe, EncodecFeaturesConfig) else 0

    def generator_state_dict(self) -> dict[str, torch.Tensor]:
        """The generator's weights under the official checkpoint keys."""
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items() if k.split(".")[0] in GENERATOR_PARTS}

    def generator(self) -> Vocos:
        """A standalone :class:`Vocos` holding a copy of the generator's current weights."""
        model = Vocos(self.config, self.hparams["encodec_weights"])
        model.load_state_dict(self.generator_state_dict(), strict=True)
        return model.eval()

    def load_generator(self, model: Vocos) -> None:
        """Start from ``model``'s weights (fine-tuning); its architecture and front-end must be this config's
        (a checkpoint of another sample rate or mel would load its own buffers and train on them unseen)."""
        differences = config_differences(model.config, self.config)
        if differences:
            raise CheckpointError("the checkpoint is not of this config's model: " + "; ".join(differences))
        self.load_state_dict({**self.state_dict(), **model.state_dict()}, strict=True)

    def on_fit_start(self) -> None:
        # An EnCodec generator trained from scratch starts from EnCodec's own codebooks, as the
        # reference's EncodecFeatures does; a loaded checkpoint already holds them.
        fe = self.feature_extractor
        if isinstance(fe, EncodecFeatures) and not bool(fe.codebook_weights.abs().sum()):
            with torch.no_grad():
                fe.codebook_weights.copy_(fe.encoder().codebook(fe.num_q))

    def features(self, audio: torch.Tensor, bandwidth_id: torch.Tensor | None) -> torch.Tensor:
        """Audio ``(B, S)`` -> features ``(B, C, T)``; the extractor is frozen, as in the reference."""
        with torch.no_grad():
            if self.num_bandwidths:
                assert bandwidth_id is not None
                return self.feature_extractor(audio, int(bandwidth_id))
            return self.feature_extractor(audio)

    def forward(self, audio: torch.Tensor, bandwidth_id: torch.Tensor | None = None) -> torch.Tensor:
        """Copy-synthesis with gradients: ``(B, S)`` -> ``(B, S')``."""
        audio_hat = self.head(self.backbone(self.features(audio, bandwidth_id), bandwidth_id=bandwidth_id))
        assert isinstance(audio_hat, torch.Tensor)
        return audio_hat

    def train_bandwidth_id(self) -> torch.Tensor | None:
        """A bandwidth id drawn per batch (EnCodec variant), else None."""
        if not self.num_bandwidths:
            return None
        return torch.randint(0, self.num_bandwidths, (1,), device=self.device)

    # -- optimisation ------------------------------------------------------------------------------

    @property
    def batches_seen(self) -> int:
        """Optimiser steps so far, each of both optimisers (see training_step): the batches trained, or with
        ``accumulate_grad_batches`` N, the windows of N batches."""
        return self.global_step // 2

    def configure_optimizers(self) -> Any:
        lr, betas = self.hparams["initial_learning_rate"], (0.8, 0.9)
        disc = [*self.multiperioddisc.parameters(), *self.multiresddisc.parameters()]
        gen = [p for part in (self.feature_extractor, self.backbone, self.head) for p in part.parameters()
               if p.requires_grad]
        opt_disc = torch.optim.AdamW(disc, lr=lr, betas=betas)
        opt_gen = torch.optim.AdamW(gen, lr=lr, betas=betas)
        total = max(1, self.trainer.max_steps // 2) if self.trainer.max_steps > 0 else 1
        warmup = self.hparams["num_warmup_steps"]
        schedules = [cosine_schedule_with_warmup(opt, warmup, total) for opt in (opt_disc, opt_gen)]
        # Stepped per batch (training_step), so logged per step (LearningRateMonitor), as the reference's.
        return [opt_disc, opt_gen], [{"scheduler": s, "interval": "step"} for s in schedules]

    def on_train_start(self) -> None:
        # A resumed run's optimisers hold the learning rate of the checkpoint's last step under the schedule
        # of then; under a longer max_steps the schedule of now gives another one, from the first batch on.
        # Its peak too is the config's: the checkpoint's would otherwise stay, under another initial_learning_rate.
        base = self.hparams["initial_learning_rate"]
        for scheduler in self.lr_schedulers():  # type: ignore[union-attr]
            assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
            scheduler.base_lrs = [base] * len(scheduler.base_lrs)
            for group, factor in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas, strict=True):
                group["initial_lr"] = base
                group["lr"] = base * factor(scheduler.last_epoch)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        audio, bandwidth_id = batch, self.train_bandwidth_id()
        accumulate = self.hparams["accumulate_grad_batches"]
        self.batches_in_window += 1  # counted across epochs: an epoch's end does not cut a window short
        step_now = self.batches_in_window >= accumulate
        optimizers, schedulers = self.optimizers(), self.lr_schedulers()
        assert isinstance(optimizers, list) and isinstance(schedulers, list)
        (opt_disc, opt_gen), (sched_disc, sched_gen) = optimizers, schedulers
        assert isinstance(sched_disc, LRScheduler) and isinstance(sched_gen, LRScheduler)
        train_disc = self.batches_seen >= self.hparams["pretrain_mel_steps"]
        disc_logs: dict[str, torch.Tensor] = {}
        if train_disc:
            loss_d, disc_logs = self.discriminator_loss(audio, bandwidth_id)
            self.manual_backward(loss_d / accumulate)
        if step_now:
            # Stepped even while the discriminators rest (no gradients: AdamW changes nothing), so
            # that global_step advances by 2 per batch throughout, as max_steps assumes.
            opt_disc.step()
            opt_disc.zero_grad(set_to_none=True)
            sched_disc.step()
        # The generator's losses pass through the discriminators, whose parameters are switched off meanwhile:
        # its backward would otherwise leave gradients on them, added to their next step's (Lightning 1.x's
        # automatic optimisation, which the reference ran on, toggled each optimiser so).
        self.toggle_optimizer(opt_gen)
        try:
            loss_g, gen_logs = self.generator_loss(audio, bandwidth_id, train_disc, log_samples=step_now)
            self.manual_backward(loss_g / accumulate)
        finally:
            self.untoggle_optimizer(opt_gen)
        if step_now:
            opt_gen.step()
            opt_gen.zero_grad(set_to_none=True)
            sched_gen.step()
            self.batches_in_window = 0
        # Logged after the last backward pass: on an epoch's first batch, Lightning drops what the training step
        # logged before a backward pass whose hook logs too (GradNormCallback's grad_norm).
        for name, value in {**disc_logs, **gen_logs}.items():
            self.log(name, value, prog_bar=name in PROGRESS_BAR)

    def discriminator_loss(self, audio: torch.Tensor, bandwidth_id: torch.Tensor | None
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            audio_hat = self(audio, bandwidth_id)
        real_mp, gen_mp, _, _ = self.multiperioddisc(audio, audio_hat, bandwidth_id=bandwidth_id)
        real_mrd, gen_mrd, _, _ = self.multiresddisc(audio, audio_hat, bandwidth_id=bandwidth_id)
        loss_mp, terms_mp, _ = self.disc_loss(real_mp, gen_mp)
        loss_mrd, terms_mrd, _ = self.disc_loss(real_mrd, gen_mrd)
        loss_mp, loss_mrd = loss_mp / len(terms_mp), loss_mrd / len(terms_mrd)
        loss = loss_mp + self.hparams["mrd_loss_coeff"] * loss_mrd
        logs = {"discriminator/total": loss, "discriminator/multi_period_loss": loss_mp,
                "discriminator/multi_res_loss": loss_mrd}
        return loss, {k: v.detach() for k, v in logs.items()}

    def generator_loss(self, audio: torch.Tensor, bandwidth_id: torch.Tensor | None, gan: bool,
                       log_samples: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        audio_hat = self(audio, bandwidth_id)
        mrd = self.hparams["mrd_loss_coeff"]
        mel_loss = self.melspec_loss(audio_hat, audio)
        loss = self.mel_loss_coeff * mel_loss
        logs: dict[str, torch.Tensor] = {}
        if self.hparams["phase_loss_coeff"]:
            phase_loss = self.phase_loss(audio_hat, audio)
            loss = loss + self.hparams["phase_loss_coeff"] * phase_loss
            logs["generator/phase_loss"] = phase_loss
        if gan:
            _, gen_mp, fmap_r_mp, fmap_g_mp = self.multiperioddisc(audio, audio_hat, bandwidth_id=bandwidth_id)
            _, gen_mrd, fmap_r_mrd, fmap_g_mrd = self.multiresddisc(audio, audio_hat, bandwidth_id=bandwidth_id)
            loss_mp, terms_mp = self.gen_loss(gen_mp)
            loss_mrd, terms_mrd = self.gen_loss(gen_mrd)
            loss_mp, loss_mrd = loss_mp / len(terms_mp), loss_mrd / len(terms_mrd)
            fm_mp = self.feat_matching_loss(fmap_r_mp, fmap_g_mp) / len(fmap_r_mp)
            fm_mrd = self.feat_matching_loss(fmap_r_mrd, fmap_g_mrd) / len(fmap_r_mrd)
            loss = loss + loss_mp + mrd * loss_mrd + fm_mp + mrd * fm_mrd
            logs.update({"generator/multi_period_loss": loss_mp, "generator/multi_res_loss": loss_mrd,
                         "generator/feature_matching_mp": fm_mp, "generator/feature_matching_mrd": fm_mrd})
        logs.update({"generator/total_loss": loss, "mel_loss_coeff": torch.tensor(float(self.mel_loss_coeff)),
                     "generator/mel_loss": mel_loss})
        if log_samples:  # once per optimiser step (of several accumulated batches, the last)
            self.log_train_samples(audio, audio_hat)
        return loss, {k: v.detach() for k, v in logs.items()}

    def on_train_batch_start(self, *args: Any) -> None:
        # At each batch's start, not the last one's end: a resumed run's first batch gets its own coefficient.
        if self.hparams["decay_mel_coeff"]:
            self.mel_loss_coeff = self.base_mel_coeff * self.mel_coeff_decay(self.batches_seen)

    def mel_coeff_decay(self, step: int) -> float:
        """The reference's half-cosine from 1 to 0 over the batches after warm-up."""
        warmup, total = self.hparams["num_warmup_steps"], self.trainer.max_steps // 2
        if step < warmup:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
