"""Finding and reading checkpoints in the official Hub layout (``config.yaml`` + ``pytorch_model.bin``)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, UnavailableError

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "pytorch_model.bin"
# Buffers rebuilt from the config must equal the stored ones to this tolerance (float32 round-off
# between library versions); anything further off means the file does not match its config.
BUFFER_ATOL = 1e-5
_LISTED_KEYS = 8
# Answers meaning the Hub is down or overloaded, which huggingface_hub would retry with backoff.
_HUB_DOWN_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def resolve_checkpoint(name_or_path: str | os.PathLike[str], revision: str | None = None,
                       cache_dir: str | os.PathLike[str] | None = None,
                       local_files_only: bool = False) -> tuple[Path, Path]:
    """Return local paths of ``(config.yaml, pytorch_model.bin)``.

    A directory is used as it is. Anything else is a Hub repo id fetched through ``huggingface_hub``
    (its cache, ``revision``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HUB_ETAG_TIMEOUT`` apply).
    An unreachable Hub costs one request, not huggingface_hub's retries: the cache is used then, and
    ``UnavailableError`` raised when the files are not in it.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        files = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: missing; a checkpoint directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        return files
    name = str(name_or_path)
    if path.is_file():  # a pytorch_model.bin, or a training run's .ckpt, given for the directory around it
        raise CheckpointError(
            f"{name!r} is a file; expected a checkpoint directory holding {CONFIG_NAME} and {WEIGHTS_NAME} "
            "(`vocos-train export` makes one from a training checkpoint), or a Hub repo id like "
            "'charactr/vocos-mel-24khz'"
        )
    if path.exists() or not hub_id_shaped(name):
        raise CheckpointError(
            f"{name!r} is neither a checkpoint directory nor a Hub repo id like 'charactr/vocos-mel-24khz'"
        )
    why_cache_only = _why_cache_only(name, revision, local_files_only)
    return (_hub_file(name, CONFIG_NAME, revision, cache_dir, why_cache_only),
            _hub_file(name, WEIGHTS_NAME, revision, cache_dir, why_cache_only))


def hub_id_shaped(name: str) -> bool:
    """Whether ``name``, not a directory here, is taken for a Hub repo id (``org/name``) rather than a path."""
    return not name.startswith((".", "/", "~")) and name.count("/") == 1


def _why_cache_only(repo_id: str, revision: str | None, local_files_only: bool) -> str | None:
    """Why the Hub is not to be asked (offline, or one probe found it unreachable), or None to ask it.

    The probe is one HEAD request without retries: huggingface_hub itself, when its first request
    fails and the file is not cached, retries five times with backoff (about 20 s) before giving up.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import HfHubHTTPError

    if local_files_only:
        return "local_files_only was asked"
    # is_offline_mode() is newer than our floor of huggingface_hub; HF_HUB_OFFLINE is what it reads.
    offline = constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE
    if offline:
        return "HF_HUB_OFFLINE is set"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, CONFIG_NAME, revision=revision),
                             timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status in _HUB_DOWN_STATUS:
            return f"the Hub at {constants.ENDPOINT} answered HTTP {status}"
        return None  # it answered (not found, gated, ...): hf_hub_download reports that precisely
    except Exception as e:  # connection refused, DNS, timeout, proxy: raised by its HTTP client
        return f"the Hub at {constants.ENDPOINT} is unreachable ({_first_line(e)})"
    return None


def _hub_file(repo_id: str, filename: str, revision: str | None, cache_dir: str | os.PathLike[str] | None,
              why_cache_only: str | None) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    # A mistyped local path of the form a/b reads as a repo id too: say so, as the error is about the Hub.
    where = f"{filename} of {repo_id!r} (revision {revision or 'main'}; no directory of that name here, so a Hub repo)"
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache,
                                    local_files_only=why_cache_only is not None))
    except LocalEntryNotFoundError as e:
        raise UnavailableError(
            f"cannot obtain {where}: {why_cache_only or 'the Hub cannot be reached'} and the file is not in "
            f"the local Hub cache ({cache})",
            f"pass a local directory holding {CONFIG_NAME} and {WEIGHTS_NAME} instead of the repo id, or "
            f"download the repo while online (`hf download {repo_id}`)",
        ) from e
    except Exception as e:  # huggingface_hub raises many classes (HTTP, not found, gated)
        raise CheckpointError(f"cannot obtain {where}: {_first_line(e)}") from e


def load_failure(exc: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one line. For a refused pickle, what it refused:
    torch's own text advises loading the file with ``weights_only=False``, that is, running its code."""
    if isinstance(exc, pickle.UnpicklingError):
        return f"it holds more than tensors, or is no torch file: {_unpickler_reason(exc)}"
    return _first_line(exc)


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused (``Unsupported global: GLOBAL builtins.print``), without
    the advice around it."""
    _, _, detail = str(exc).partition("WeightsUnpickler error:")
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    # "Unsupported global: GLOBAL print was not an allowed global by default. Please use ...add_safe_globals"
    return lines[0].split(" was not an allowed")[0][:200] if lines else "refused by the weights-only unpickler"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True``: tensors and containers only, never arbitrary pickles."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing") from e
    except pickle.UnpicklingError as e:  # not chained: torch's text advises weights_only=False
        raise CheckpointError(f"{path}: not a loadable weights file ({load_failure(e)}); weights are read as "
                              "tensors alone, never as pickled objects") from None
    except Exception as e:  # truncated zip, not a torch file ...
        raise CheckpointError(f"{path}: not a loadable weights file ({load_failure(e)})") from e
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
