"""Export a trained generator in the official Hub layout: ``config.yaml`` + ``pytorch_model.bin``.

The config is the model's ``feature_extractor`` / ``backbone`` / ``head`` mappings exactly as the
training config gave them (class paths of the reference package), and the weights are the
generator's part of the LightningModule's state dict, under the keys official checkpoints use. The
directory loads strictly in :meth:`vocos_core.Vocos.from_pretrained` and in vocos 0.1.0.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_failure
from ..errors import CheckpointError, VocosError
from .experiment import GENERATOR_PARTS


class OutputDirError(VocosError, OSError):
    """The output directory cannot be created or written (an OSError still, for callers that catch those)."""


HUB_DIR_HINT = "; a Hub-layout model (config.yaml + pytorch_model.bin) is for --init-from DIR"


def hub_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """The ``config.yaml`` mapping of a model's hyperparameters."""
    missing = [k for k in GENERATOR_PARTS if k not in hparams]
    if missing:
        raise CheckpointError(f"checkpoint hyperparameters lack {missing}; expected a vocos-train checkpoint")
    return {k: _plain(hparams[k]) for k in GENERATOR_PARTS}


def _plain(value: Any) -> Any:
    """Mappings and sequences as plain dicts and lists, so that yaml.safe_dump writes them."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_hub_dir(out_dir: str | os.PathLike[str], config: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    except OSError as exc:  # the raw error ("[Errno 17] File exists") does not say what the argument should be
        raise OutputDirError(f"{out}: {_output_dir_problem(out, exc)}; expected a directory to create or an "
                             "existing, writable directory") from None
    torch.save({k: v.contiguous() for k, v in state.items()}, out / WEIGHTS_NAME)
    return out


def _output_dir_problem(out: Path, exc: OSError) -> str:
    # A file in the way (the path itself or one of its folders) is named: the OS calls both cases differently.
    in_the_way = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        return "is a file" if in_the_way == out else f"{in_the_way} is a file"
    return (exc.strerror or str(exc)).lower()


def read_checkpoint(ckpt: str | os.PathLike[str]) -> dict[str, Any]:
    """A Lightning checkpoint as data (CheckpointError when it is missing or not one)."""
    if os.path.isdir(ckpt):  # else torch's IsADirectoryError; an export (Hub layout) is what a user has at hand
        raise CheckpointError(f"{ckpt}: is a directory; expected a .ckpt file written by vocos-train fit "
                              f"(logs/.../checkpoints/last.ckpt){HUB_DIR_HINT}")
    if os.path.isfile(ckpt) and not zipfile.is_zipfile(ckpt):  # else torch's mmap refusal, which blames torch.save
        raise CheckpointError(f"{ckpt}: cannot be read as a checkpoint (not the zip archive torch.save writes)")
    try:
        # weights_only: a checkpoint is data; unpickling arbitrary objects would run whatever code it names.
        # mmap: a run's checkpoint holds the discriminators and both optimisers, mostly not needed here.
        data = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt}: no such file") from None
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise CheckpointError(f"{ckpt}: cannot be read as a checkpoint ({load_failure(exc)})") from None
    if not isinstance(data, dict) or "state_dict" not in data or "hyper_parameters" not in data:
        raise CheckpointError(f"{ckpt}: not a Lightning checkpoint (no state_dict / hyper_parameters); expected a "
                              f".ckpt file written by vocos-train fit (logs/.../checkpoints/last.ckpt){HUB_DIR_HINT}")
    return data


def export_checkpoint(ckpt: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write the generator of Lightning checkpoint ``ckpt`` to ``out_dir``; returns ``out_dir``."""
    data = read_checkpoint(ckpt)
    config = hub_config(dict(data["hyper_parameters"]))
    state = {k: v for k, v in data["state_dict"].items() if k.split(".")[0] in GENERATOR_PARTS}
    return write_hub_dir(out_dir, config, state)
