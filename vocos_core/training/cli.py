"""``vocos-train``: LightningCLI over the recipe, plus ``export``.

    vocos-train fit --config configs/vocos.yaml [--init-from charactr/vocos-mel-24khz | DIR] [--ckpt_path last.ckpt]
    vocos-train export CKPT OUT_DIR

``fit``, ``validate`` and the other subcommands are LightningCLI's, configured by YAML files shaped
as the reference's ``configs/*.yaml``. ``--init-from`` starts the generator from a Hub-layout
checkpoint (fine-tuning); ``--ckpt_path`` resumes a Lightning checkpoint (optimisers, step, all).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ..errors import CheckpointError
from ..pretrained import Vocos
from .data import VocosDataModule
from .experiment import VocosExp


class VocosCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--init-from", default=None, type=str | None,
                            help="Hub repo id or Hub-layout directory to start the generator from")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would merge the checkpoint's hyperparameters into the config through
        # jsonargparse, which tries to import the reference's class paths held in them (vocos.*).
        # The config given is used as it is; the checkpoint still restores weights, optimisers and step.
        return

    def before_fit(self) -> None:
        init_from = self.config[self.subcommand].get("init_from")
        if init_from and self.config[self.subcommand].get("ckpt_path"):
            raise SystemExit("--init-from and --ckpt_path exclude each other: resume, or start from a model")
        if init_from:
            assert isinstance(self.model, VocosExp)
            try:
                self.model.load_generator(Vocos.from_pretrained(init_from))
            except CheckpointError as exc:
                raise SystemExit(f"vocos-train: --init-from {init_from}: {exc}") from None


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
    # args=None when run as a command: LightningCLI reads sys.argv itself (and warns when handed it).
    VocosCLI(VocosExp, VocosDataModule, subclass_mode_data=True, args=None if argv is None else args,
             save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
