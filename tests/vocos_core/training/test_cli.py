"""vocos-train's command line: generator hyperparameters as flags, and one line for a bad generator config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vocos_core.testing import write_random_checkpoint
from vocos_core.training.cli import component_overrides, main

from .training_helpers import TINY_DIM, tiny_config


def test_component_flags_are_taken_out_with_their_yaml_values() -> None:
    args = ["fit", "--config", "c.yaml", "--model.backbone.init_args.dim", "8", "--trainer.max_steps", "2",
            "--model.head.init_args.padding=same", "--model.backbone.init_args.layer_scale_init_value", "null",
            "--model.sample_rate", "24000"]
    rest, found = component_overrides(args)
    assert rest == ["fit", "--config", "c.yaml", "--trainer.max_steps", "2", "--model.sample_rate", "24000"]
    assert found == [("backbone", "dim", 8), ("head", "padding", "same"), ("backbone", "layer_scale_init_value", None)]
    with pytest.raises(SystemExit, match=r"--model.head.init_args.dim needs a value"):
        component_overrides(["fit", "--model.head.init_args.dim"])
    with pytest.raises(SystemExit, match=r"^vocos-train: --model.head.init_args.padding: '\[same' is not a YAML value"):
        component_overrides(["fit", "--model.head.init_args.padding", "[same"])


@pytest.mark.parametrize(("flag", "message"), [
    (["--model.backbone.init_args.dimm", "5"], r"unknown argument\(s\) \['dimm'\]; valid: \["),
    (["--model.backbone.init_args.dim", "-8"], r"backbone \(VocosBackbone\)\.dim: expected a positive integer"),
    # written one level too high: jsonargparse keeps it beside init_args, where it would be ignored
    (["--model.backbone.dim", "8"], r"section 'backbone' has unknown key\(s\) \['dim'\]"),
])
def test_a_bad_generator_flag_stops_the_run_in_one_line(tmp_path: Path, flag: list[str], message: str) -> None:
    config = tiny_config("vocos.yaml", tmp_path, max_steps=1)
    with pytest.raises(SystemExit, match=rf"^vocos-train: .*{message}"):
        main(["fit", "--config", str(config), *flag])


def test_a_file_list_that_cannot_be_used_stops_the_run_in_one_line(tmp_path: Path) -> None:
    config = tiny_config("vocos.yaml", tmp_path, max_steps=1)
    with pytest.raises(SystemExit, match=r"^vocos-train: .*absent.list: cannot read the file list"):
        main(["fit", "--config", str(config), "--data.init_args.train_params.filelist_path",
              str(tmp_path / "absent.list"), "--trainer.num_sanity_val_steps", "0"])


@pytest.mark.parametrize("flag", [["--init", "charactr/vocos-mel-24khz"], ["--trainer.max_step", "1"]])
def test_an_abbreviated_flag_is_refused(tmp_path: Path, flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A prefix of an option was taken for it (--init for --init-from, --trainer.max_step for max_steps): a
    shortened or misspelt flag could set another option without a word."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=1)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), *flag, "--print_config"])
    assert f"unrecognized arguments: {' '.join(flag)}" in capsys.readouterr().err


def test_print_config_shows_the_generator_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """jsonargparse printed the config before the flags were applied: a config saved so trained another model."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=1)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(config), "--model.backbone.init_args.dim", "24", "--print_config"])
    assert stopped.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["backbone"]["init_args"]["dim"] == 24
    with pytest.raises(SystemExit) as stopped:  # jsonargparse's older name of skip_unset is taken as it takes it
        main(["fit", "--config", str(config), "--model.backbone.init_args.dim", "24", "--print_config=skip_null"])
    assert stopped.value.code in (0, None) and "dim: 24" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"^vocos-train: --print_config=bogus: expected flags among"):
        main(["fit", "--config", str(config), "--model.backbone.init_args.dim", "24", "--print_config=bogus"])


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_subcommands_the_recipe_cannot_run_are_not_offered(tmp_path: Path, subcommand: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """They were, and ended in a traceback (no test_step, no predict_dataloader)."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=1)
    with pytest.raises(SystemExit):
        main([subcommand, "--config", str(config)])
    assert "invalid choice" in capsys.readouterr().err


def test_validate_checks_the_settings_and_loads_init_from(tmp_path: Path) -> None:
    """validate ignored --init-from (a missing directory too) and the checks, and evaluated a fresh model."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=1)
    with pytest.raises(SystemExit, match=r"^vocos-train: --init-from .*absent: .* is neither a checkpoint directory"):
        main(["validate", "--config", str(config), "--init-from", str(tmp_path / "absent")])
    other = write_random_checkpoint(tmp_path / "hub", "mel", dim=TINY_DIM + 8, num_layers=1)
    with pytest.raises(SystemExit, match=r"^vocos-train: --init-from .*backbone.dim: checkpoint 24, config 16"):
        main(["validate", "--config", str(config), "--init-from", str(other)])
    with pytest.raises(SystemExit, match=r"val_params.sampling_rate 16000 is not the model's sample rate 24000"):
        main(["validate", "--config", str(config), "--data.init_args.val_params.sampling_rate", "16000"])


def test_ckpt_path_last_after_a_run_in_another_version_folder_stops_the_run(tmp_path: Path) -> None:
    """Lightning trained from scratch after one warning, as it does in every new version_N folder: right for the
    first run of a job that always passes last, wrong once an earlier run left its last.ckpt in version_0."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2)
    main(["fit", "--config", str(config), "--ckpt_path", "last"])  # the first run: nothing to resume, it trains
    earlier = tmp_path / "logs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert earlier.is_file()
    with pytest.raises(SystemExit, match=r"^vocos-train: --ckpt_path last: no last checkpoint in .*version_1"
                                         r".*checkpoints: this run logs to a new version_N folder, .* e\.g\. "
                                         + re.escape(str(earlier))):
        main(["fit", "--config", str(config), "--ckpt_path", "last"])
    # Under the same logger version, last is that folder's checkpoint, checked against the config as any path is.
    with pytest.raises(SystemExit, match=r"^vocos-train: --ckpt_path .*version_0.*last\.ckpt: the checkpoint is not "
                                         r"of this config's model: backbone\.dim"):
        main(["fit", "--config", str(config), "--ckpt_path", "last", "--trainer.logger.init_args.version", "0",
              "--model.backbone.init_args.dim", str(TINY_DIM + 8), "--model.head.init_args.dim", str(TINY_DIM + 8)])


def test_ckpt_path_last_in_a_folder_the_job_names_trains_beside_other_runs(tmp_path: Path) -> None:
    """A job naming its own folder (--trainer.logger.init_args.version, as the docs advise for last) could not start
    its first run where another run had left a version_0: it stopped, saying the run logged to a new version_N."""
    config = tiny_config("vocos.yaml", tmp_path, max_steps=2, trainer={"num_sanity_val_steps": 0,
                                                                       "limit_val_batches": 0})
    main(["fit", "--config", str(config)])  # another experiment, in version_0
    assert (tmp_path / "logs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    main(["fit", "--config", str(config), "--ckpt_path", "last", "--trainer.logger.init_args.version", "job"])
    assert (tmp_path / "logs" / "lightning_logs" / "job" / "checkpoints" / "last.ckpt").is_file()
