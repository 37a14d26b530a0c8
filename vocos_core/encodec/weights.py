"""Locating, verifying and strictly loading EnCodec 24 kHz weights.

Where the weights come from, in order: an explicit path, the ``VOCOS_ENCODEC_WEIGHTS`` environment
variable, or the official file through the torch hub cache (``torch.hub.get_dir()/checkpoints``, the
place torch itself caches it), downloaded only when absent. The official file is checked against the
sha256 prefix in its name every time, cached or not; a local file is trusted as given (tests use random
weights in the official format).
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.error import URLError

import torch

from ..checkpoint import read_state_dict
from ..errors import CheckpointError, UnavailableError
from .model import EncodecEncoder

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"
OFFICIAL_SHA256_PREFIX = "d7cc33bc"
ENV_VAR = "VOCOS_ENCODEC_WEIGHTS"
# Longest wait for each connect and read of the download: offline, it fails in this long at most.
DOWNLOAD_TIMEOUT_S = 10.0
# The official file also holds the EnCodec decoder; Vocos replaces it, so those keys are not loaded.
IGNORED_PREFIXES = ("decoder.",)


def official_cache_path() -> Path:
    """Where torch hub caches the official file: ``<hub dir>/checkpoints/<file name of the URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / OFFICIAL_URL.rsplit("/", 1)[-1]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_official(path: Path) -> None:
    """Raise CheckpointError unless ``path``'s sha256 starts with the official prefix."""
    actual = sha256_of(path)
    if not actual.startswith(OFFICIAL_SHA256_PREFIX):
        raise CheckpointError(
            f"{path}: sha256 starts with {actual[:len(OFFICIAL_SHA256_PREFIX)]!r}, expected "
            f"{OFFICIAL_SHA256_PREFIX!r} (the official encodec_24khz checkpoint); delete it to download "
            f"again, or pass a local path / set {ENV_VAR}"
        )


def fetch_official() -> Path:
    """Path of the verified official file, downloading it into the torch hub cache if absent."""
    path = official_cache_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        download_verified(OFFICIAL_URL, path, OFFICIAL_SHA256_PREFIX)
    verify_official(path)
    return path


def download_verified(url: str, path: Path, sha256_prefix: str, timeout: float | None = None) -> None:
    """Download ``url`` to ``path`` through a temporary file, moved into place only when its sha256
    starts with ``sha256_prefix``, so a truncated or wrong download never poisons the cache.

    Each connect and read waits at most ``timeout`` seconds (``DOWNLOAD_TIMEOUT_S``): torch hub's own
    downloader sets none, and would wait forever on a network that drops packets.
    """
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with (urllib.request.urlopen(url, timeout=timeout or DOWNLOAD_TIMEOUT_S) as response,
              partial.open("wb") as out):
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if not digest.hexdigest().startswith(sha256_prefix):
            raise CheckpointError(
                f"{url}: downloaded file failed verification: sha256 starts with "
                f"{digest.hexdigest()[:len(sha256_prefix)]!r}, expected {sha256_prefix!r}"
            )
        os.replace(partial, path)
    except (URLError, OSError) as exc:  # refused, unresolvable, timed out, HTTP errors, disk full
        raise UnavailableError(
            f"cannot download EnCodec weights from {url} ({getattr(exc, 'reason', None) or exc})",
            f"pass a local path to encodec_24khz-d7cc33bc.th or set {ENV_VAR}",
        ) from exc
    finally:
        partial.unlink(missing_ok=True)


def expected_path(weights: str | os.PathLike[str] | None) -> Path:
    """The file ``resolve_weights`` loads for ``weights``, whether or not it exists yet (nothing is fetched)."""
    if weights is None:
        weights = os.environ.get(ENV_VAR) or None
    return official_cache_path() if weights is None else Path(weights).expanduser()


def resolve_weights(weights: str | os.PathLike[str] | None) -> Path:
    """The file to load for ``weights`` (see module docstring for the order)."""
    if weights is None:
        weights = os.environ.get(ENV_VAR) or None
        if weights is None:
            return fetch_official()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"EnCodec weights file not found: {path}")
    return path


def check_keys(
    path: Path, state: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """The entries of ``state`` that ``model`` uses, after checking they match it exactly."""
    used = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(expected.keys() - used.keys())
    unexpected = sorted(used.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not an encodec_24khz state dict; missing keys {_short(missing)}, "
            f"unexpected keys {_short(unexpected)}"
        )
    wrong = [
        f"{k} {tuple(used[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if used[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"{path}: wrong tensor shapes: {_short(wrong)}")
    return used


def _short(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"


def load_encodec_encoder(
    weights: str | os.PathLike[str] | None = None, *, map_location: str | torch.device = "cpu"
) -> EncodecEncoder:
    """EnCodec 24 kHz encoder + quantizer with weights loaded strictly, in eval mode, frozen (no parameter
    requires grad: it makes codes, through which no gradient flows), on ``map_location``.

    Args:
        weights: path of an ``encodec_24khz`` state dict; ``None`` means ``$VOCOS_ENCODEC_WEIGHTS`` if
            set, else the official file through the torch hub cache (sha256-verified).
        map_location: device the returned module lives on.

    Raises:
        CheckpointError: file missing, unreadable, not a state dict, keys or shapes that do not match,
            official file failing verification or not downloadable.
    """
    path = resolve_weights(weights)
    state = read_state_dict(path)
    model = EncodecEncoder()
    model.load_state_dict(check_keys(path, state, model), strict=True)
    return model.to(map_location).eval().requires_grad_(False)
