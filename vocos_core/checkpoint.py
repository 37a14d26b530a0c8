"""Finding and reading checkpoints in the official Hub layout (``config.yaml`` + ``pytorch_model.bin``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "pytorch_model.bin"
# Buffers rebuilt from the config must equal the stored ones to this tolerance (float32 round-off
# between library versions); anything further off means the file does not match its config.
BUFFER_ATOL = 1e-5
_LISTED_KEYS = 8


def resolve_checkpoint(name_or_path: str | os.PathLike[str], revision: str | None = None,
                       cache_dir: str | os.PathLike[str] | None = None,
                       local_files_only: bool = False) -> tuple[Path, Path]:
    """Return local paths of ``(config.yaml, pytorch_model.bin)``.

    A directory is used as it is. Anything else is a Hub repo id fetched through
    ``huggingface_hub`` (its cache, ``revision``, and ``HF_HUB_OFFLINE`` apply).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        files = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: missing; a checkpoint directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        return files
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise CheckpointError(
            f"{name!r} is neither a checkpoint directory nor a Hub repo id like 'charactr/vocos-mel-24khz'"
        )
    return (_hub_file(name, CONFIG_NAME, revision, cache_dir, local_files_only),
            _hub_file(name, WEIGHTS_NAME, revision, cache_dir, local_files_only))


def _hub_file(repo_id: str, filename: str, revision: str | None, cache_dir: str | os.PathLike[str] | None,
              local_files_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        cache = None if cache_dir is None else Path(cache_dir)
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache,
                                    local_files_only=local_files_only))
    except Exception as e:  # huggingface_hub raises many classes (HTTP, offline, not found)
        raise CheckpointError(
            f"cannot obtain {filename} of {repo_id!r} (revision {revision or 'main'}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            f"Without network access, download the repo elsewhere and pass its local directory "
            f"(holding {CONFIG_NAME} and {WEIGHTS_NAME}) instead of the repo id"
        ) from e


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True``: tensors and containers only, never arbitrary pickles."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing") from e
    except Exception as e:  # unpickling refused, truncated zip, not a torch file ...
        raise CheckpointError(f"{path}: not a loadable weights file ({type(e).__name__}: {e})") from e
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path}: expected a state dict mapping parameter names to tensors")
    return dict(state)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``module``: every key used, none missing, shapes equal, buffers consistent."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_list(unexpected)}")
        raise CheckpointError(f"{path}: does not match its config.yaml: {'; '.join(parts)}")
    for key, ours in expected.items():
        theirs = state[key]
        if theirs.shape != ours.shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(theirs.shape)}, config.yaml implies {tuple(ours.shape)}"
            )
        if not theirs.is_floating_point() and not theirs.is_complex():
            continue
        if not bool(torch.isfinite(theirs).all()):
            raise CheckpointError(f"{path}: {key} holds NaN or Inf values")
    buffers = {name for name, _ in module.named_buffers()}
    for key in sorted(buffers & set(state)):
        if not torch.allclose(state[key].float(), expected[key].float(), rtol=0, atol=BUFFER_ATOL):
            raise CheckpointError(
                f"{path}: buffer {key} differs from the one its config.yaml defines "
                f"(max abs difference {(state[key].float() - expected[key].float()).abs().max().item():.3g})"
            )
    module.load_state_dict(state, strict=True)


def _list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    return f"[{shown}{', ...' if len(keys) > _LISTED_KEYS else ''}] ({len(keys)})"
