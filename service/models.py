"""Loading the configured Vocos models onto the serving device, and the adapter the engine drives.

A model that cannot be obtained stops the server at start with one line naming the model and how to
point at a local copy (``StartupError``), instead of failing on the first request. The EnCodec
weights, needed by the EnCodec model's audio-in path alone, do not: see ``service.audio_path``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from service.audio_path import AudioPath
from service.settings import Settings
from vocos_core import Vocos, bf16x3
from vocos_core.errors import UnavailableError, VocosError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class StartupError(RuntimeError):
    """The service cannot start; the message is one line saying what to change."""


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> the first GPU when there is one, else the CPU; ``cuda`` -> ``cuda:0``."""
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        raise StartupError(
            f"VOCOS_DEVICE={spec}: this machine has {count} CUDA device(s); use cpu, auto"
            + (f" or cuda:0..cuda:{count - 1}" if count else "")
        )
    return torch.device(f"cuda:{index}")


class ServedModel:
    """A loaded Vocos model on its device, with the engine's ``decode_batch`` protocol.

    Engine inputs are ``(C, T)`` tensors: float features (mel, or EnCodec embeddings from audio), or
    integer EnCodec codes ``(K, T)``, embedded here in the compute thread so the codebook lookup runs
    on the model's device next to the decode. Outputs are float32 CPU tensors ``(S,)``.
    """

    def __init__(self, model: Vocos, source: str, device: torch.device, dtype: str,
                 revision: str | None = None) -> None:
        self.model = model
        self.kind: str = model.kind
        self.source = source  # as configured: may be a local path, for the server's own log only
        self.public_name = public_name(source, revision)
        self.device = device
        self.dtype = dtype
        self.sample_rate = model.sample_rate
        self.n_features = model.n_features
        self.bandwidths = model.bandwidths
        self.codebooks = tuple(model.num_codebooks(i) for i in range(len(model.bandwidths)))
        # Fewest frames that yield any audio (a centred mel model gives none for one frame).
        self.min_frames = next(t for t in range(1, 64) if model.num_samples(t) > 0)
        self.min_audio_samples = model.min_audio_samples()
        self.audio_path = AudioPath(model)

    def num_samples(self, frames: int) -> int:
        return self.model.num_samples(frames)

    def seconds(self, frames: int) -> float:
        return self.model.num_samples(frames) / self.sample_rate

    def decode_batch(
        self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """``[(C, T_i)]`` -> ``[(S_i,)]`` float32 on the CPU, exactly as each item alone."""
        features = [self._features(x) for x in inputs]
        outputs = self.model.decode_batch(features, bandwidth_ids)
        return [y.float().cpu() for y in outputs]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return x
        return self.model.codes_to_features(x)[0]  # (K, T) codes -> (1, 128, T) -> (128, T)

    def audio_to_features(self, audio: np.ndarray, bandwidth_id: int | None) -> torch.Tensor:
        """Mono float32 audio ``(S,)`` at ``sample_rate`` -> features ``(C, T)`` on the model's device.

        Call it once ``audio_path`` is available (``AudioPath.require``); the EnCodec encoder would
        otherwise be loaded here, on the request, unthrottled.
        """
        assert self.audio_path.available, "audio_to_features before AudioPath.require"
        return self.model.audio_to_features(torch.from_numpy(audio), bandwidth_id)[0]  # (1, C, T) -> (C, T)

def load_models(settings: Settings) -> dict[str, ServedModel]:
    """Every enabled model, on the configured device and dtype; StartupError on any failure."""
    device = resolve_device(settings.device)
    matmuls = set_cpu_matmul(settings, device)
    models = {}
    for kind in settings.enabled_models:
        source = settings.model_source(kind)
        assert source is not None
        models[kind] = load_model(kind, source, settings, device)
        log.info("%s model: %s", kind, matmuls)
    return models


def set_cpu_matmul(settings: Settings, device: torch.device) -> str:
    """On CPU, let float32 matmuls run as bf16x3 (``vocos_core.bf16x3``) unless ``cpu_matmul`` is float32;
    returns the matmuls the models will run, for the start-up log.

    Through PyTorch's process-wide float32 matmul precision, "high" for bf16x3. Left alone on a GPU,
    where "high" would mean TF32 (10 significand bits) in cuBLAS.
    """
    if device.type != "cpu":
        return f"{torch.get_float32_matmul_precision()} float32 matmul precision"
    bf16x3.set_cpu_matmul(settings.cpu_matmul)
    reason = bf16x3.unsupported_reason()
    if settings.cpu_matmul == "bf16x3" and reason is not None:
        return f"float32 matmuls, as bf16x3 cannot run: {reason}"
    return f"{settings.cpu_matmul} matmuls"


def load_model(kind: str, source: str, settings: Settings, device: torch.device) -> ServedModel:
    env = f"VOCOS_{kind.upper()}_MODEL"
    start = time.monotonic()
    try:
        model = Vocos.from_pretrained(
            source, revision=settings.revision, encodec_weights=settings.encodec_weights
        )
    except (VocosError, OSError) as exc:
        raise StartupError(_load_failure(kind, source, exc)) from exc
    if model.kind != kind:
        raise StartupError(f"{env}={source} holds a {model.kind} model, not a {kind} model")
    model = place(model, device, DTYPES[settings.dtype])
    served = ServedModel(model, source, device, settings.dtype, settings.revision)
    # Only /resynthesize?model=encodec needs the EnCodec weights: without them the server starts,
    # the rest of it works, and that path loads them once they are present (service.audio_path).
    served.audio_path.load_at_start()
    log.info(
        "loaded %s model %s on %s (%s) in %.1f s",
        kind,
        source,
        device,
        settings.dtype,
        time.monotonic() - start,
    )
    return served


def _load_failure(kind: str, source: str, exc: BaseException) -> str:
    """One line: what went wrong, then one sentence of what to do (the advice of vocos_core, worded for
    its library callers, is left out rather than said twice)."""
    reason = exc.reason if isinstance(exc, UnavailableError) else _one_line(exc)
    download = (
        f" (for example one downloaded where the Hub is reachable: `hf download {source} --local-dir DIR`, "
        "`huggingface-cli download` before huggingface_hub 1.0)"
        if isinstance(exc, UnavailableError)
        else ""
    )
    return (
        f"cannot load the {kind} model from {source!r}: {reason.rstrip('.')}. "
        f"Point VOCOS_{kind.upper()}_MODEL (or --{kind}-model) at a local directory holding config.yaml and "
        f"pytorch_model.bin{download}, or set it to 'none' to disable the model."
    )


def public_name(source: str, revision: str | None) -> str:
    """What clients are told a model is (X-Model-Source, /readyz, /metrics): the Hub id, with ``@revision``
    when one is set, or ``local:<directory name>`` for a local checkpoint, never the server's paths."""
    path = Path(source).expanduser()
    if path.is_dir():
        return f"local:{Path(os.path.abspath(path)).name}"  # abspath: the name of "." or "ckpt/.." too
    return f"{source}@{revision}" if revision else source


def place(model: Vocos, device: torch.device, dtype: torch.dtype) -> Vocos:
    """Move to ``device``; a reduced ``dtype`` applies to the backbone and the head's projection only.

    The feature extractor (mel filterbank, EnCodec encoder and codebooks) and the inverse transforms
    keep float32: their buffers are exact constants, and half-precision FFTs are inexact.
    """
    model = model.to(device)
    if dtype != torch.float32:
        model.backbone.to(dtype)
        model.head.out.to(dtype)
    return model.eval()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
