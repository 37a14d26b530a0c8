"""``vocos-train``: LightningCLI over the recipe, plus ``export``.

    vocos-train fit --config configs/vocos.yaml [--init-from charactr/vocos-mel-24khz | DIR] [--ckpt_path last.ckpt]
    vocos-train export CKPT OUT_DIR

``fit`` and ``validate`` are LightningCLI's (the recipe has no test or predict step), configured by YAML files shaped
as the reference's ``configs/*.yaml``; ``--model.backbone.init_args.dim 256`` (any section and argument)
overrides one generator hyperparameter. ``--init-from`` starts the generator from a Hub-layout
checkpoint (fine-tuning); ``--ckpt_path`` resumes a Lightning checkpoint (optimisers, step, all).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from ..errors import CheckpointError, InputError
from ..pretrained import Vocos
from .checks import last_checkpoint, resume_problems, run_problems
from .data import VocosDataModule
from .experiment import VocosExp

# ``--model.backbone.init_args.dim 256``: one generator hyperparameter from the command line. The sections
# are plain mappings (typed so, as the reference's class paths cannot be imported here), which jsonargparse
# cannot override key by key: it would keep such a flag as a key beside init_args, and the run would train
# the config file's model. These flags are taken out of the arguments and applied before the model is built.
_COMPONENT_FLAG = re.compile(r"--model\.(feature_extractor|backbone|head)\.init_args\.(\w+)(?:=(.*))?", re.S)


def component_overrides(args: Sequence[str]) -> tuple[list[str], list[tuple[str, str, Any]]]:
    """``args`` without the component flags, and each flag as (section, argument, YAML-parsed value)."""
    rest: list[str] = []
    found: list[tuple[str, str, Any]] = []
    i = 0
    while i < len(args):
        match = _COMPONENT_FLAG.fullmatch(args[i])
        if match is None:
            rest.append(args[i])
            i += 1
            continue
        if match.group(3) is None and i + 1 == len(args):
            raise SystemExit(f"vocos-train: {args[i]} needs a value")
        raw = match.group(3) if match.group(3) is not None else args[i + 1]
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise SystemExit(f"vocos-train: {args[i]}: {raw!r} is not a YAML value ({getattr(exc, 'problem', exc)})"
                             ) from None
        found.append((match.group(1), match.group(2), value))
        i += 1 if match.group(3) is not None else 2
    return rest, found


def print_config_request(args: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """``args`` without ``--print_config[=FLAGS]``, and its flags (None when it is not there)."""
    rest, flags = [], None
    for arg in args:
        name, _, value = arg.partition("=")
        if name == "--print_config":
            flags = [f for f in value.split(",") if f]
        else:
            rest.append(arg)
    return rest, flags


class VocosCLI(LightningCLI):
    def __init__(self, *args: Any, component_overrides: Sequence[tuple[str, str, Any]] = (),
                 print_config: Sequence[str] | None = None, **kwargs: Any) -> None:
        self.component_overrides = list(component_overrides)  # LightningCLI runs everything in its __init__
        self.print_config = None if print_config is None else list(print_config)
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # test and predict need steps and loaders that the recipe does not have: offered, they ended in a traceback.
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Applied here, right after parsing, so that --print_config and the saved config.yaml show them too.
        config = self.config[self.config["subcommand"]]
        for section, name, value in self.component_overrides:
            spec = dict(config["model"][section])
            spec["init_args"] = {**(spec.get("init_args") or {}), name: value}
            config["model"][section] = spec
        if self.print_config is not None:
            self._print_config(config)

    def _print_config(self, config: Any) -> None:
        """jsonargparse's --print_config, which would print the config before the generator flags are applied."""
        # jsonargparse's flags (skip_null: its older name of skip_unset), as its dump takes them (pyproject's floor).
        names = {"skip_default": "skip_default", "skip_unset": "skip_unset", "skip_null": "skip_unset",
                 "comments": "with_comments"}
        unknown = [f for f in self.print_config or () if f not in names]
        if unknown:
            raise SystemExit(f"vocos-train: --print_config={','.join(unknown)}: expected flags among {sorted(names)}")
        options = {"skip_unset": False, **{names[f]: True for f in self.print_config or ()}}
        sys.stdout.write(self._parser(self.config["subcommand"]).dump(config, **options))
        raise SystemExit(0)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except CheckpointError as exc:  # the generator's config (file or flags): one line, not a traceback
            raise SystemExit(f"vocos-train: {exc}") from None

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except InputError as exc:  # the data (file lists, audio files): one line, not a traceback
            raise SystemExit(f"vocos-train: {exc}") from None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--init-from", default=None, type=str | None,
                            help="Hub repo id or Hub-layout directory to start the generator from")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would merge the checkpoint's hyperparameters into the config through
        # jsonargparse, which tries to import the reference's class paths held in them (vocos.*).
        # The config given is used as it is; the checkpoint still restores weights, optimisers and step.
        return

    def before_fit(self) -> None:
        self._prepare_model(self.trainer.max_steps)

    def before_validate(self) -> None:
        # Validation takes the same checks and --init-from as training: it evaluated a fresh model without a word.
        self._prepare_model(None)

    def _prepare_model(self, max_steps: int | None) -> None:
        """Stops in one line on settings that cannot run; loads --init-from (not when resuming)."""
        assert isinstance(self.model, VocosExp)
        problems = run_problems(self.model, self.datamodule, max_steps)
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path:
            problems += resume_problems(self.model, str(ckpt_path), self.trainer)
        if problems:
            raise SystemExit("vocos-train: " + "; ".join(problems))
        init_from = self.config[self.subcommand].get("init_from")
        # "last" with no checkpoint yet (a job's first run) resumes nothing: Lightning trains the model as built.
        resumes = bool(ckpt_path) and not (ckpt_path == "last" and last_checkpoint(self.trainer)[0] is None)
        if init_from and resumes:
            # The checkpoint's weights replace the generator's anyway; and a fine-tuning run's own config.yaml,
            # the one to resume with, holds its init_from.
            _warn(f"vocos-train: --init-from {init_from} is not loaded: --ckpt_path {ckpt_path} holds the weights")
        elif init_from:
            try:
                self.model.load_generator(Vocos.from_pretrained(init_from))
            except CheckpointError as exc:
                raise SystemExit(f"vocos-train: --init-from {init_from}: {exc}") from None


@rank_zero_only
def _warn(message: str) -> None:
    print(message, file=sys.stderr)


EXPORT_USAGE = ("vocos-train export CKPT OUT_DIR: write a checkpoint's generator as config.yaml + "
                "pytorch_model.bin (the Hub layout the server loads); vocos-train export --help for more")


def export_main(argv: Sequence[str]) -> None:
    from .export import export_checkpoint

    ap = argparse.ArgumentParser(prog="vocos-train export",
                                 description="Write a Lightning checkpoint's generator in the Hub layout")
    ap.add_argument("ckpt", help="Lightning checkpoint (.ckpt) written by vocos-train fit")
    ap.add_argument("out_dir", help="directory for config.yaml + pytorch_model.bin")
    args = ap.parse_args(argv)
    try:
        out = export_checkpoint(args.ckpt, args.out_dir)
    except (CheckpointError, OSError) as exc:
        raise SystemExit(f"vocos-train export: {exc}") from None
    print(f"wrote {out}")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["export"]:
        export_main(args[1:])
        return
    if args[:1] in ([], ["-h"], ["--help"]):  # LightningCLI's help lists its own subcommands only
        print(EXPORT_USAGE)
    args, overrides = component_overrides(args)
    print_config = None
    if overrides:  # else jsonargparse's own
        args, print_config = print_config_request(args)
    if argv is None:  # LightningCLI reads sys.argv itself when run as a command (and warns when handed it)
        sys.argv[1:] = args
    # No abbreviated flags: a prefix of an option was taken for it (--init for --init-from), so a misspelt or
    # shortened flag could set another option without a word.
    VocosCLI(VocosExp, VocosDataModule, subclass_mode_data=True, args=None if argv is None else args,
             save_config_kwargs={"overwrite": True}, component_overrides=overrides,
             print_config=print_config,
             parser_kwargs={"allow_abbrev": False})


if __name__ == "__main__":
    main()
