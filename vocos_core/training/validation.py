"""Validation and TensorBoard samples of :class:`~.experiment.VocosExp`: metrics, audio, mel images.

``val_loss`` is the reference's: mel L1 + (5 - UTMOS) + (5 - PESQ), with a metric that is not
evaluated counting as 0 (PESQ too where it scores no item: no speech, or crops too short), so
checkpoints are ranked as the reference ranks them (among runs that evaluate the same metrics).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from . import metrics, periodicity, utmos

log = logging.getLogger(__name__)
TRAIN_SAMPLE_EVERY = 1000  # batches between training audio/mel samples, as the reference


def mel_image(mel: torch.Tensor) -> np.ndarray:
    """``(n_mels, T)`` log-mel -> ``(H, W, 3)`` uint8 picture for TensorBoard."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 3))
    im = ax.imshow(mel.detach().float().cpu().numpy(), aspect="auto", origin="lower", interpolation="none")
    plt.colorbar(im, ax=ax)
    ax.set_xlabel("Frames")
    ax.set_ylabel("Channels")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
    plt.close(fig)
    return image


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


class ValidationMixin:
    """Validation of the generator; mixed into the LightningModule (uses its ``log``, ``logger``, ...)."""

    hparams: Any
    _val_outputs: list[dict[str, Any]]
    _val_metrics: dict[str, bool]

    def _tensorboard(self) -> Any:
        """The SummaryWriter of a TensorBoard logger, or None (other loggers, or none)."""
        logger = getattr(self, "logger", None)
        writer = getattr(logger, "experiment", None)
        return writer if hasattr(writer, "add_audio") else None

    def _log_pair(self, tag: str, audio: torch.Tensor, audio_hat: torch.Tensor, step: int) -> None:
        writer = self._tensorboard()
        if writer is None:
            return
        sr = self.hparams["sample_rate"]
        mel = self.melspec_loss  # type: ignore[attr-defined]
        writer.add_audio(f"{tag}/audio_in", audio.detach().cpu(), step, sr)
        writer.add_audio(f"{tag}/audio_pred", audio_hat.detach().float().cpu(), step, sr)
        with torch.no_grad():
            writer.add_image(f"{tag}/mel_target", mel_image(mel.log_mel(audio[None])[0]), step, dataformats="HWC")
            writer.add_image(f"{tag}/mel_pred", mel_image(mel.log_mel(audio_hat[None].float())[0]), step,
                             dataformats="HWC")

    def _scalars_step(self) -> int:
        """The step at which Lightning logs what ``self.log`` gives now: one per batch, and a validation's that of
        the batch before it. Samples go there too, beside their metrics: ``global_step`` counts both optimisers'
        steps (2 per batch), ``batches_seen`` windows of accumulated batches. (Lightning's own callbacks, its
        LearningRateMonitor for one, read the same counter.)"""
        return int(self.trainer.fit_loop.epoch_loop._batches_that_stepped)  # type: ignore[attr-defined]

    def log_train_samples(self, audio: torch.Tensor, audio_hat: torch.Tensor) -> None:
        batches = self.batches_seen  # type: ignore[attr-defined]
        if batches % TRAIN_SAMPLE_EVERY == 0 and self.global_rank == 0:  # type: ignore[attr-defined]
            self._log_pair("train", audio[0], audio_hat[0], self._scalars_step())

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []
        # Which optional metrics run this epoch: set, and able to (checked once, not per batch).
        self._val_metrics = {}
        for flag, reason in (("evaluate_utmos", metrics.utmos_unavailable()),
                             ("evaluate_periodicty", metrics.periodicity_unavailable()),
                             ("evaluate_pesq", metrics.pesq_unavailable())):
            self._val_metrics[flag] = bool(self.hparams[flag]) and reason is None
            if self.hparams[flag] and reason and not getattr(self, f"_warned_{flag}", False):
                log.warning("%s is set but skipped: %s", flag, reason)
                setattr(self, f"_warned_{flag}", True)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, Any]:
        audio = batch
        bandwidth_id = torch.tensor([0], device=audio.device) if self.num_bandwidths else None  # type: ignore[attr-defined]
        audio_hat = self(audio, bandwidth_id)  # type: ignore[operator]
        sr = self.hparams["sample_rate"]
        out: dict[str, Any] = {
            "mel_loss": float(self.melspec_loss(audio_hat, audio)),  # type: ignore[attr-defined]
            "mrstft": float(metrics.mrstft_distance(audio_hat, audio)),
            "pesq_score": 0.0,
            "utmos_score": 0.0,
        }
        pesq, periodic, mos = (self._val_metrics[k] for k in ("evaluate_pesq", "evaluate_periodicty", "evaluate_utmos"))
        if pesq or periodic or mos:  # the metrics are all taken at 16 kHz: resampled once
            y_16k, y_hat_16k = metrics.to_16k(audio, sr), metrics.to_16k(audio_hat, sr)
            if mos:
                out["utmos_score"] = utmos.utmos_score(utmos.installed_utmos().to(audio.device),
                                                       torch.from_numpy(y_hat_16k).to(audio.device))
            if pesq:
                out["pesq_score"] = metrics.pesq_wb(y_16k, y_hat_16k)
            if periodic:
                out.update(self._periodicity(y_16k, y_hat_16k))
        if batch_idx == 0:
            out["sample"] = (audio[0].detach().cpu(), audio_hat[0].detach().cpu())
        self._val_outputs.append(out)
        return out

    def _periodicity(self, audio: np.ndarray, audio_hat: np.ndarray) -> dict[str, float]:
        """The reference's periodicity metrics of a batch ``(B, S)`` at 16 kHz."""
        if audio.shape[-1] < periodicity.WINDOW:
            return {}
        rmse, pitch, f1 = periodicity.periodicity_metrics(periodicity.installed_crepe(), torch.from_numpy(audio),
                                                          torch.from_numpy(audio_hat))
        return {"periodicity_loss": rmse, "pitch_loss": pitch, "f1_score": f1}

    def on_validation_epoch_end(self) -> None:
        outputs = self._val_outputs
        if not outputs:
            return
        keys = ("mel_loss", "mrstft", "pesq_score", "utmos_score")
        mean = {k: _nanmean([o[k] for o in outputs]) for k in keys}
        pesq = self._validation_pesq(mean["pesq_score"])
        counted_pesq = 0.0 if pesq is None else pesq
        log_ = self.log  # type: ignore[attr-defined]
        log_("val_loss", mean["mel_loss"] + (5 - mean["utmos_score"]) + (5 - counted_pesq), sync_dist=True)
        log_("val/mel_loss", mean["mel_loss"], sync_dist=True)
        log_("val/mrstft", mean["mrstft"], sync_dist=True)
        if self._val_metrics["evaluate_utmos"]:
            log_("val/utmos_score", mean["utmos_score"], sync_dist=True)
        if pesq is not None:
            log_("val/pesq_score", pesq, sync_dist=True)
        for key in ("periodicity_loss", "pitch_loss", "f1_score"):  # the reference's names
            values = [o[key] for o in outputs if key in o]
            if values:
                log_(f"val/{key}", _nanmean(values), sync_dist=True)
        sample = next((o["sample"] for o in outputs if "sample" in o), None)
        if sample is not None and self.global_rank == 0:  # type: ignore[attr-defined]
            self._log_pair("val", sample[0], sample[1], self._scalars_step())

    def _validation_pesq(self, local: float) -> float | None:
        """This validation's PESQ over all ranks (items where PESQ finds no speech left out), or None where it is
        not evaluated: not set, not installed, or no item scored on any rank. None is logged as no score and
        counts as 0 in val_loss, as the reference counts a metric it does not evaluate; a val/pesq_score of 0
        would be a score below PESQ's range (1 to 4.64) that no audio gets."""
        if not self._val_metrics["evaluate_pesq"]:
            return None
        # Each rank's mean, gathered: all ranks then log the same keys (a sync_dist key that some ranks do not
        # log stalls the others), and a rank without speech does not pull the mean of the others down.
        gathered = self.all_gather(torch.tensor(local, dtype=torch.float32))  # type: ignore[attr-defined]
        score = _nanmean(torch.as_tensor(gathered).flatten().tolist())
        if not math.isnan(score):
            return score
        if not getattr(self, "_warned_pesq_unscored", False):
            log.warning("val/pesq_score is not logged: PESQ scored no validation item (it needs speech, and at least "
                        "1/4 s of audio per item); val_loss counts it as 0, as when evaluate_pesq is off")
            self._warned_pesq_unscored = True
        return None
