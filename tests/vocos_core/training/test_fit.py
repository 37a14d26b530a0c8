"""A few training steps of every shipped config at tiny sizes; resume; fine-tune from a Hub-layout directory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vocos_core.pretrained import Vocos
from vocos_core.testing import checkpoint_config, random_model, write_random_checkpoint
from vocos_core.training import metrics, utmos
from vocos_core.training.cli import main
from vocos_core.training.experiment import VocosExp
from vocos_core.training.utmos import UTMOS22Strong

from .training_helpers import TINY_DIM, fixture_script, tiny_config

# Each test runs Lightning fits (the full-size discriminators): tens of seconds on 2 CPU cores.
pytestmark = pytest.mark.slow


CONFIGS = ["vocos.yaml", "vocos-encodec.yaml", "vocos-imdct.yaml", "vocos-resnet.yaml", "vocos-hifigan-mel-22khz.yaml"]


def last_checkpoint(tmp: Path) -> Path:
    found = sorted(tmp.glob("logs/**/checkpoints/last.ckpt"))
    assert found, f"no last.ckpt under {tmp}"
    return found[-1]


def load(ckpt: Path) -> VocosExp:
    return VocosExp.load_from_checkpoint(ckpt, map_location="cpu")


def untrained_state(hparams: dict) -> dict[str, torch.Tensor]:
    """The module's state before training: same hyperparameters, the configs' seed."""
    torch.manual_seed(4444)
    return VocosExp(**{k: v for k, v in hparams.items() if not k.startswith("_")}).state_dict()


@pytest.mark.parametrize("name", CONFIGS)
def test_few_steps_train_generator_and_discriminators(tmp_path: Path, name: str, encodec_weights: Path) -> None:
    extra = {"encodec_weights": str(encodec_weights)} if "encodec" in name else None
    config = tiny_config(name, tmp_path, max_steps=4, extra_model=extra)
    main(["fit", "--config", str(config), "--trainer.num_sanity_val_steps", "0"])
    trained = torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)
    assert trained["global_step"] == 4  # 2 batches x 2 optimisers
    before = untrained_state(trained["hyper_parameters"])
    changed = {k.split(".")[0] for k, v in trained["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, before[k])}
    assert {"backbone", "head", "multiperioddisc", "multiresddisc"} <= changed


def test_tensorboard_holds_losses_metrics_audio_and_mel_images(tmp_path: Path) -> None:
    main(["fit", "--config", str(tiny_config("vocos.yaml", tmp_path, max_steps=4))])  # one epoch, then validation
    events = sorted(tmp_path.glob("logs/**/events.out.tfevents.*"))
    acc = EventAccumulator(str(events[-1].parent), size_guidance={"audio": 0, "images": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    assert {"generator/mel_loss", "generator/total_loss", "discriminator/total", "val/mel_loss", "val/mrstft",
            "val_loss", "grad_norm"} <= set(tags["scalars"])
    if metrics.periodicity_unavailable() is None:  # vocos.yaml sets evaluate_periodicty, as the reference
        assert {"val/periodicity_loss", "val/pitch_loss", "val/f1_score"} <= set(tags["scalars"])
    assert {"train/audio_in", "train/audio_pred", "val/audio_in", "val/audio_pred"} <= set(tags["audio"])
    assert {"train/mel_target", "train/mel_pred", "val/mel_target", "val/mel_pred"} <= set(tags["images"])
    mel = [e.value for e in acc.Scalars("generator/mel_loss")]
    assert all(0 < v < 100 for v in mel)
    # The learning rates of both optimisers at each of the 2 batches (they were logged once an epoch).
    assert [len(acc.Scalars(tag)) for tag in ("lr-AdamW", "lr-AdamW-1")] == [2, 2]


def test_resume_continues_from_the_lightning_checkpoint(tmp_path: Path) -> None:
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2, trainer={"num_sanity_val_steps": 0})
    main(["fit", "--config", str(config)])
    first = last_checkpoint(tmp_path)
    saved = tmp_path / "first.ckpt"
    saved.write_bytes(first.read_bytes())
    main(["fit", "--config", str(config), "--trainer.max_steps", "6", "--ckpt_path", str(saved)])
    resumed = torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 6
    opt_steps = [s["state"][0]["step"] for s in resumed["optimizer_states"]]
    assert [float(s) for s in opt_steps] == [3.0, 3.0]  # one step per optimiser per batch, 3 batches in all


def test_pretrain_mel_steps_leave_the_discriminators_untouched(tmp_path: Path) -> None:
    config = tiny_config("vocos.yaml", tmp_path, max_steps=4, extra_model={"pretrain_mel_steps": 10},
                         trainer={"num_sanity_val_steps": 0})
    main(["fit", "--config", str(config)])
    trained = torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)
    fresh = untrained_state(trained["hyper_parameters"])
    for key, value in trained["state_dict"].items():
        if key.startswith(("multiperioddisc", "multiresddisc")):
            assert torch.equal(value, fresh[key]), key
    assert trained["global_step"] == 4


def test_demo_config_trains_the_generator_alone_with_its_phase_loss(tmp_path: Path) -> None:
    config = tiny_config("demo-mel-24khz.yaml", tmp_path, max_steps=4, trainer={"num_sanity_val_steps": 0})
    main(["fit", "--config", str(config)])
    trained = torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)
    hparams = trained["hyper_parameters"]
    assert hparams["phase_loss_coeff"] > 0
    fresh = untrained_state(hparams)
    changed = {k.split(".")[0] for k, v in trained["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, fresh[k])}
    assert changed == {"backbone", "head"}  # no GAN: the discriminators rest
    acc = EventAccumulator(str(sorted(tmp_path.glob("logs/**/events.out.tfevents.*"))[-1].parent),
                           size_guidance={"scalars": 0}).Reload()
    terms = {tag: [e.value for e in acc.Scalars(tag)] for tag in
             ("generator/mel_loss", "generator/phase_loss", "generator/total_loss")}
    assert all(v and all(math.isfinite(x) and x > 0 for x in v) for v in terms.values()), terms
    mel, phase, total = (terms[t][0] for t in terms)
    expected = hparams["mel_loss_coeff"] * mel + hparams["phase_loss_coeff"] * phase
    assert total == pytest.approx(expected, rel=1e-4)


def test_init_from_a_hub_layout_directory_starts_from_its_weights(tmp_path: Path) -> None:
    hub = write_random_checkpoint(tmp_path / "hub", "mel", dim=TINY_DIM, num_layers=1, seed=3)
    # learning rate 0: training leaves the generator exactly as loaded
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2, extra_model={"initial_learning_rate": 0.0},
                         trainer={"num_sanity_val_steps": 0})
    main(["fit", "--config", str(config), "--init-from", str(hub)])
    module = load(last_checkpoint(tmp_path))
    expected = Vocos.from_pretrained(hub).state_dict()
    got = module.generator_state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_a_fine_tuning_run_resumes_with_its_own_saved_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """The saved config.yaml holds init_from, and --init-from beside --ckpt_path stopped the run: the resume that
    the docs (and the mismatch message) point to failed for every fine-tuning run."""
    hub = write_random_checkpoint(tmp_path / "hub", "mel", dim=TINY_DIM, num_layers=1, seed=3)
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2, trainer={"num_sanity_val_steps": 0,
                                                                       "limit_val_batches": 0})
    main(["fit", "--config", str(config), "--init-from", str(hub)])
    first = last_checkpoint(tmp_path)
    (saved,) = first.parent.parent.glob("config.yaml")
    assert yaml.safe_load(saved.read_text())["init_from"] == str(hub)
    main(["fit", "--config", str(saved), "--ckpt_path", str(first), "--trainer.max_steps", "4"])
    assert torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)["global_step"] == 4
    assert f"--init-from {hub} is not loaded: --ckpt_path {first} holds the weights" in capsys.readouterr().err


def test_a_fine_tuning_job_passing_ckpt_path_last_starts_its_first_run_from_init_from(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no checkpoint yet, --ckpt_path last resumes nothing, yet --init-from was skipped ("not loaded: --ckpt_path
    last holds the weights"): the job's fine-tuning trained a randomly initialised generator, without a word."""
    hub = write_random_checkpoint(tmp_path / "hub", "mel", dim=TINY_DIM, num_layers=1, seed=3)
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2, extra_model={"initial_learning_rate": 0.0},
                         trainer={"num_sanity_val_steps": 0, "limit_val_batches": 0})
    job = ["fit", "--config", str(config), "--init-from", str(hub), "--ckpt_path", "last",
           "--trainer.logger.init_args.version", "job"]
    main(job)
    assert "is not loaded" not in capsys.readouterr().err
    got, expected = load(last_checkpoint(tmp_path)).generator_state_dict(), Vocos.from_pretrained(hub).state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    main([*job, "--trainer.max_steps", "4"])  # its next run resumes that checkpoint, init_from left out
    assert torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)["global_step"] == 4
    assert f"--init-from {hub} is not loaded: --ckpt_path last holds the weights" in capsys.readouterr().err


def test_generator_flags_set_the_model_trained_and_the_config_saved(tmp_path: Path) -> None:
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2, trainer={"num_sanity_val_steps": 0})
    small = TINY_DIM // 2
    main(["fit", "--config", str(config), "--model.backbone.init_args.dim", str(small),
          f"--model.head.init_args.dim={small}", "--model.backbone.init_args.intermediate_dim", str(3 * small)])
    module = load(last_checkpoint(tmp_path))
    assert module.config.backbone.dim == module.config.head.dim == small
    assert module.generator_state_dict()["backbone.embed.weight"].shape[0] == small
    (saved,) = tmp_path.glob("logs/**/config.yaml")  # LightningCLI's copy of the run's config
    assert yaml.safe_load(saved.read_text())["model"]["backbone"]["init_args"]["dim"] == small


def test_init_from_a_checkpoint_of_another_architecture_fails(tmp_path: Path) -> None:
    hub = write_random_checkpoint(tmp_path / "hub", "mel", dim=TINY_DIM * 2, num_layers=1)
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2)
    with pytest.raises(SystemExit, match=rf"backbone\.dim: checkpoint {TINY_DIM * 2}, config {TINY_DIM}"):
        main(["fit", "--config", str(config), "--init-from", str(hub)])


def test_init_from_a_checkpoint_of_another_front_end_fails(tmp_path: Path) -> None:
    """Same shapes, another sample rate: its mel filterbank would load and train unseen, and the export
    would not load against its own config."""
    hub = tmp_path / "hub16k"
    hub.mkdir()
    other = checkpoint_config("mel", dim=TINY_DIM, num_layers=1)
    other["feature_extractor"]["init_args"]["sample_rate"] = 16000
    (hub / "config.yaml").write_text(yaml.safe_dump(other))
    torch.save(random_model(other).state_dict(), hub / "pytorch_model.bin")
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2)
    with pytest.raises(SystemExit, match=r"feature_extractor\.sample_rate: checkpoint 16000, config 24000"):
        main(["fit", "--config", str(config), "--init-from", str(hub)])


def test_gradient_accumulation_steps_every_n_batches(tmp_path: Path) -> None:
    config = tiny_config("vocos.yaml", tmp_path, max_steps=4, extra_model={"accumulate_grad_batches": 2},
                         trainer={"num_sanity_val_steps": 0, "limit_val_batches": 0})
    main(["fit", "--config", str(config)])
    trained = torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)
    assert trained["global_step"] == 4  # 2 optimiser steps each ...
    assert [float(s["state"][0]["step"]) for s in trained["optimizer_states"]] == [2.0, 2.0]
    assert trained["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 4  # ... over 4 batches


def test_audio_and_mel_samples_are_logged_at_the_steps_of_their_scalars(tmp_path: Path) -> None:
    """Validation samples were logged at global_step, which counts both optimisers' steps (2 per batch), and
    training samples at the count of accumulation windows, while the scalars count batches."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=4, trainer={"num_sanity_val_steps": 0},
                         extra_model={"accumulate_grad_batches": 2, "evaluate_periodicty": False})
    main(["fit", "--config", str(config)])  # 2 epochs of 2 batches, one window each, each followed by validation
    events = sorted(tmp_path.glob("logs/**/events.out.tfevents.*"))
    acc = EventAccumulator(str(events[-1].parent), size_guidance={"audio": 0, "images": 0, "scalars": 0}).Reload()
    val_steps = [e.step for e in acc.Scalars("val/mel_loss")]
    assert val_steps == [1, 3]
    for tag in ("val/audio_in", "val/audio_pred"):
        assert [e.step for e in acc.Audio(tag)] == val_steps, tag
    for tag in ("val/mel_target", "val/mel_pred"):
        assert [e.step for e in acc.Images(tag)] == val_steps, tag
    assert [e.step for e in acc.Audio("train/audio_pred")] == [1]  # the first window's last batch
    assert [e.step for e in acc.Images("train/mel_pred")] == [1]
    assert "val/pesq_score" not in acc.Tags()["scalars"]  # crops under PESQ's 1/4 s: no score, not 0


def test_bf16_mixed_precision_trains(tmp_path: Path) -> None:
    """``--trainer.precision bf16-mixed`` (the GPU recipe's) through CPU autocast: every part steps, and
    the losses stay finite."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=4,
                         trainer={"precision": "bf16-mixed", "num_sanity_val_steps": 0})
    main(["fit", "--config", str(config)])
    trained = torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)
    assert trained["global_step"] == 4
    before = untrained_state(trained["hyper_parameters"])
    changed = {k.split(".")[0] for k, v in trained["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, before[k])}
    assert {"backbone", "head", "multiperioddisc", "multiresddisc"} <= changed
    assert all(v.dtype == torch.float32 and bool(v.isfinite().all()) for v in trained["state_dict"].values()
               if v.is_floating_point())  # mixed: the weights stay float32
    events = sorted(tmp_path.glob("logs/**/events.out.tfevents.*"))
    acc = EventAccumulator(str(events[-1].parent), size_guidance={"scalars": 0}).Reload()
    for tag in ("generator/total_loss", "discriminator/total", "val/mel_loss"):
        assert all(math.isfinite(e.value) for e in acc.Scalars(tag)), tag


def test_utmos_is_logged_when_its_weights_are_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = UTMOS22Strong()
    fixture_script("make_utmos_fixture").fill_utmos(model)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(model.state_dict(), tmp_path / "hub" / "checkpoints" / utmos.WEIGHTS_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    utmos.installed_utmos.cache_clear()
    try:
        config = tiny_config("vocos.yaml", tmp_path, max_steps=4, extra_model={"evaluate_utmos": True},
                             trainer={"num_sanity_val_steps": 0})
        main(["fit", "--config", str(config)])
    finally:
        utmos.installed_utmos.cache_clear()
    events = sorted(tmp_path.glob("logs/**/events.out.tfevents.*"))
    acc = EventAccumulator(str(events[-1].parent), size_guidance={"scalars": 0}).Reload()
    (score,) = [e.value for e in acc.Scalars("val/utmos_score")]
    (val_loss,) = [e.value for e in acc.Scalars("val_loss")]
    (mel,) = [e.value for e in acc.Scalars("val/mel_loss")]
    pesq = [e.value for e in acc.Scalars("val/pesq_score")] if "val/pesq_score" in acc.Tags()["scalars"] else [0.0]
    assert 1.0 < score < 5.0
    assert val_loss == pytest.approx(mel + (5 - score) + (5 - pesq[0]), rel=1e-5)  # the reference's ranking
