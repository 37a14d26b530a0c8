"""Loading the configured Vocos models onto the serving device, and the adapter the engine drives.

A model that cannot be obtained stops the server at start with one line naming the model and how to
point at a local copy (``StartupError``), instead of failing on the first request. The EnCodec
weights, needed by the EnCodec model's audio-in path alone, do not: see ``service.runtime.audio_path``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.errors import InvalidInputError
from service.runtime.audio_path import DEFAULT_WEIGHTS_SETTING, NAMED_WEIGHTS_SETTING, AudioPath
from service.runtime.registry import ModelSpec, RegistryError, model_specs
from service.settings import Settings
from vocos_core import Vocos, matmul_ways
from vocos_core.builtin import DEMO_DESCRIPTION, DEMO_MEL_24KHZ
from vocos_core.checkpoint import CONFIG_NAME, WEIGHTS_NAME, hub_id_shaped
from vocos_core.config import EncodecFeaturesConfig, FeatureExtractorConfig, MelSpectrogramFeaturesConfig
from vocos_core.errors import UnavailableError, VocosError
from vocos_core.feature_extractors import ENCODEC_BINS, MelSpectrogramFeatures, codebooks_for_bandwidth
from vocos_core.hifigan_mel import HiFiGANMelSpectrogramFeatures
from vocos_core.mel_check import MelFrontEnd, mel_front_end
from vocos_core.modules import probe_layers
from vocos_core.shape_buckets import bucket
from vocos_core.spectral_ops import LOG_CLIP
from vocos_core.steps import Steps, mapped
from vocos_core.streaming import Lookahead, StreamState, decode_steps

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Rows of the stream steps warmed up at start: 32 real-time streams of 5-20-frame chunks take ~400.
WARM_STEP_ROWS = 1024


class StartupError(RuntimeError):
    """The service cannot start; the message is one line saying what to change."""


def resolve_device(spec: str, setting: str = "VOCOS_DEVICE") -> torch.device:
    """``auto`` -> the first GPU when there is one, else the CPU; ``cuda`` -> ``cuda:0``. ``setting``: where
    ``spec`` came from, for the error."""
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        raise StartupError(
            f"{setting}={spec}: this machine has {count} CUDA device(s); use cpu, auto"
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
                 revision: str | None = None, name: str | None = None,
                 weights_setting: str = DEFAULT_WEIGHTS_SETTING) -> None:
        self.model = model
        self.kind: str = model.kind
        self.name = name or model.kind  # what requests ask for (?model=), metrics and X-Model say
        # A local checkpoint has no revisions: the server's VOCOS_REVISION does not apply to it.
        self.revision = None if is_local(source) else revision
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
        self.audio_path = AudioPath(model, self.name, weights_setting)
        self.mel_front_end = mel_front_end_of(model)  # the range check_mel holds mels to; None for EnCodec
        # How its float32 matmuls run on CPU (vocos_core.matmul_ways), set by load_models; None on a GPU.
        self.cpu_matmul: str | None = None
        # The resolved spec it was loaded from (load_model), whose batching options its engine takes: the models
        # file is read once, so an edit made while the models load cannot give a model another file's options.
        self.spec: ModelSpec | None = None

    def num_samples(self, frames: int) -> int:
        return self.model.num_samples(frames)

    def describe(self) -> dict[str, Any]:
        """This model for ``GET /models``: enough for a client to check its features match."""
        head = self.model.config.head
        return {
            "name": self.name,
            "kind": self.kind,
            "sample_rate": self.sample_rate,
            "hop_length": self.model.hop_length,
            "n_fft": getattr(head, "n_fft", None) or getattr(head, "mdct_frame_len", None),
            "n_features": self.n_features,
            "front_end": front_end(self.model.config.feature_extractor),
            "dtype": self.dtype,
            "device": str(self.device),
            "cpu_matmul": self.cpu_matmul,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "source": self.public_name,
            "revision": self.revision,
            "lookahead_frames": self.model.lookahead.frames,
            "lookahead_ms": round(self.model.lookahead.ms, 3),
        }

    def check_frames(self, frames: int) -> None:
        """InvalidInputError unless ``frames`` frames give audio: a request's or a whole stream's."""
        if frames < self.min_frames:
            raise InvalidInputError(
                f"{frames} frame(s) give no audio with the {self.kind} model; send at least {self.min_frames}"
            )

    def seconds(self, frames: int) -> float:
        return self.model.num_samples(frames) / self.sample_rate

    def decode_batch(
        self, inputs: Sequence[torch.Tensor], bandwidth_ids: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """``[(C, T_i)]`` -> ``[(S_i,)]`` float32 on the CPU, exactly as each item alone."""
        features = [self._features(x) for x in inputs]
        outputs = self.model.decode_batch(features, bandwidth_ids)
        return [y.float().cpu() for y in outputs]

    def start_stream(self, bandwidth_id: int | None, lookahead_frames: int | None = None) -> StreamState:
        """A new stream's state (``vocos_core.streaming``); the bandwidth id only for EnCodec models;
        ``lookahead_frames`` below the exact lookahead for a low-latency stream."""
        return StreamState.start(self.model, bandwidth_id, lookahead_frames)

    def decode_steps(self, states: Sequence[StreamState], chunks: Sequence[torch.Tensor],
                     final: Sequence[bool], guess: Sequence[bool] | None = None) -> list[torch.Tensor]:
        """One step of each stream, all in one call: chunks ``(C, t_i)`` (features or codes) -> the audio
        ``(S_i,)`` each lets out (``vocos_core.streaming.decode_steps``, ``guess`` included), float32 on the CPU."""
        outputs = decode_steps(self.model, states, [self._features(x) for x in chunks], final, guess)
        return [y.float().cpu() for y in outputs]

    def warm_up_steps(self, step_frames: int, max_rows: int = WARM_STEP_ROWS) -> None:
        """Stream steps of up to ``max_rows`` rows on throw-away streams of at most ``step_frames`` frames a
        step (the engine's ``StreamPolicy.max_step_frames``), every row-count bucket
        (``vocos_core.shape_buckets``) among them, so that oneDNN has compiled their kernels (~2 ms a
        shape) before the first streams' steps would each pay for it; CPU models only."""
        if self.device.type != "cpu":
            return
        bandwidth_id = 0 if self.bandwidths else None
        for rows in sorted({bucket(n) for n in range(1, max_rows + 1)}):
            streams = -(-rows // step_frames)  # as many streams as one step of that many rows takes
            sizes = [rows // streams + (i < rows % streams) for i in range(streams)]
            chunks = [torch.zeros(self.codebooks[0], n, dtype=torch.long) if self.bandwidths else
                      torch.zeros(self.n_features, n) for n in sizes]
            states = [self.start_stream(bandwidth_id) for _ in range(streams)]
            self.decode_steps(states, chunks, [False] * streams)

    @property
    def lookahead(self) -> Lookahead:
        return self.model.lookahead

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return x
        return self.model.codes_to_features(x)[0]  # (K, T) codes -> (1, 128, T) -> (128, T)

    def analysis(self, audio: np.ndarray, bandwidth_id: int | None) -> Steps:
        """Mono float32 audio ``(S,)`` at ``sample_rate`` -> features ``(C, T)`` on the CPU, as
        :data:`~vocos_core.steps.Steps` (a unit per layer of each chunk of the EnCodec encoder), so
        that other model work runs between them (``SerialWorker``), and each piece ``(C, t)`` of the
        features is out once final; to run in inference mode.

        Call it once ``audio_path`` is available (``AudioPath.require``); the EnCodec encoder would
        otherwise be loaded here, on the request, unthrottled.
        """
        assert self.audio_path.available, "analysis before AudioPath.require"
        # (1, C, t) -> (C, t), copied off a GPU here, in the model thread: the event loop joins and reads the
        # pieces (a streamed resynthesis), where a copy would wait for the device's queued work; and the copy
        # makes each slice's time that of its computation, not of its kernel launches.
        return mapped(self.model.audio_to_features_steps(torch.from_numpy(audio), bandwidth_id),
                      lambda x: x[0].cpu())


def load_models(settings: Settings) -> dict[str, ServedModel]:
    """Every served model (``service.runtime.registry``), each on its device and dtype, by name; StartupError
    on any failure."""
    try:
        specs = model_specs(settings)
    except RegistryError as exc:
        raise StartupError(str(exc)) from None
    if not specs:  # a server of no model would answer ready and 404 to everything
        raise StartupError("no model to serve: VOCOS_MEL_MODEL and VOCOS_ENCODEC_MODEL are none and "
                           "VOCOS_MODELS / VOCOS_MODELS_FILE name no model")
    devices = {spec.name: resolve_device(spec.device or settings.device, spec.device_setting) for spec in specs}
    models, unavailable = {}, []
    for spec in specs:
        try:
            models[spec.name] = load_model(spec, devices[spec.name])
        except StartupError as exc:
            if not (spec.default and isinstance(exc.__cause__, UnavailableError)):
                raise
            unavailable.append((spec, exc))
    if unavailable:
        models.update(load_builtin_fallback(unavailable, devices, loaded=list(models)))
    cpu_models = [m for m in models.values() if m.device.type == "cpu"]
    gpu_float32 = [m.name for m in models.values() if m.device.type != "cpu" and m.dtype == "float32"]
    if cpu_models:
        way = set_cpu_matmul(settings, cpu_models, gpu_float32)
        for served in cpu_models:  # a bfloat16/float16 model has no float32 matmuls: no way to show
            served.cpu_matmul = way if served.dtype == "float32" else None
    return models


def load_builtin_fallback(unavailable: list[tuple[ModelSpec, StartupError]], devices: dict[str, torch.device],
                          loaded: Sequence[str] = ()) -> dict[str, ServedModel]:
    """In place of unset default models all out of reach: the built-in demo as ``mel``, no EnCodec model;
    one WARNING line says so. Re-raises the first failure when some default model did load (``loaded``)."""
    mel = next((spec for spec, _ in unavailable if spec.name == "mel"), None)
    # A cache holding one official model but not the other is a fill to finish, not "no Hub": the demo served
    # beside the real EnCodec model hid it behind one warning, while the reverse case stopped (docs/training.md).
    if mel is None or loaded:
        raise unavailable[0][1]
    served = load_model(dataclasses.replace(mel, source=str(DEMO_MEL_24KHZ), revision=None, default=False),
                        devices["mel"])
    left_out = ", ".join(spec.source for spec, _ in unavailable)
    log.warning("no model is configured and %s cannot be obtained (no Hub access, not in the cache): serving %s "
                "as 'mel'; set VOCOS_MEL_MODEL or VOCOS_MODELS to serve a real model", left_out, DEMO_DESCRIPTION)
    return {"mel": served}


def set_cpu_matmul(settings: Settings, cpu_models: list[ServedModel], gpu_float32: Sequence[str] = ()) -> str:
    """Choose how the CPU models' float32 matmuls run (``vocos_core.matmul_ways``: ``cpu_matmul`` forces a
    way, ``auto`` probes each on the models' own linear layers), set it, log the choice in one line, and
    return the plan's name.

    One plan for the process, as PyTorch's float32 matmul precision that goes with it: so called only
    with CPU models, and never bf16x3 beside the float32 GPU models ``gpu_float32`` (names), whose precision
    "high" would turn on TF32 in cuBLAS for them too.
    """
    layers = [layer for served in cpu_models for layer in probe_layers(served.model)]
    excluded: dict[matmul_ways.Way, str] = {}
    if gpu_float32:
        excluded["bf16x3"] = (f"the float32 GPU model(s) {', '.join(gpu_float32)} would run TF32 matmuls "
                              "under its precision 'high'")
    plan, why = matmul_ways.resolve(settings.cpu_matmul, layers, excluded)
    matmul_ways.set_plan(plan)
    log.info("CPU float32 matmuls: %s", why)
    return plan.name


def load_model(spec: ModelSpec, device: torch.device) -> ServedModel:
    """The model of ``spec`` (resolved: every option set) on ``device``."""
    start = time.monotonic()
    try:
        model = Vocos.from_pretrained(spec.source, revision=spec.revision, encodec_weights=spec.encodec_weights)
    except (VocosError, OSError) as exc:
        raise StartupError(_load_failure(spec, exc)) from exc
    if spec.legacy and model.kind != spec.name:
        raise StartupError(  # kinds, not "a encodec model": the article depends on the word
            f"VOCOS_{spec.name.upper()}_MODEL={spec.source} holds a model of kind {model.kind}, expected kind "
            f"{spec.name}; serve it under a name of its own with VOCOS_MODELS (name=source) instead"
        )
    dtype = spec.dtype or "float32"
    model = place(model, device, DTYPES[dtype])
    served = ServedModel(model, spec.source, device, dtype, spec.revision, spec.name,
                         DEFAULT_WEIGHTS_SETTING if spec.legacy else NAMED_WEIGHTS_SETTING)
    served.spec = spec
    # Only /resynthesize?model=encodec needs the EnCodec weights: without them the server starts,
    # the rest of it works, and that path loads them once they are present (service.runtime.audio_path).
    served.audio_path.load_at_start()
    log.info("loaded %s model %r from %s on %s (%s) in %.1f s", served.kind, spec.name, spec.source, device,
             dtype, time.monotonic() - start)
    return served


def _load_failure(spec: ModelSpec, exc: BaseException) -> str:
    """One line: what went wrong, then one sentence of what to do (the advice of vocos_core, worded for
    its library callers, is left out rather than said twice)."""
    reason = exc.reason if isinstance(exc, UnavailableError) else _one_line(exc)
    download = (
        f" (for example one downloaded where the Hub is reachable: `hf download {spec.source} --local-dir DIR`, "
        "`huggingface-cli download` before huggingface_hub 1.0)"
        if isinstance(exc, UnavailableError)
        else ""
    )
    if spec.legacy:
        what = f"the {spec.name} model"
        setting = f"VOCOS_{spec.name.upper()}_MODEL (or --{spec.name}-model)"
        disable = ", or set it to 'none' to disable the model"
    else:  # the setting that defines it, the models file by its path: with several, a name alone is no address
        what = f"model {spec.name!r}"
        setting, disable = f"the source of model {spec.name!r} in {spec.origin}", ""
    if _is_checkpoint_directory(spec.source):  # both files there: pointing at "a directory holding them" is no fix
        fix = (f"Its config.yaml and pytorch_model.bin must be one Vocos checkpoint in the Hub layout: replace them, "
               f"or point {setting} at another checkpoint directory")
    else:
        fix = f"Point {setting} at a local directory holding config.yaml and pytorch_model.bin{download}"
    why = f"{reason.rstrip('.')}{_relative_hint(spec.source)}"
    return f"cannot load {what} from {spec.source!r}: {why}. {fix}{disable}."


def _is_checkpoint_directory(source: str) -> bool:
    path = Path(source).expanduser()
    return all((path / name).is_file() for name in (CONFIG_NAME, WEIGHTS_NAME))


def _relative_hint(source: str) -> str:
    """Where a relative path that is no directory was looked for: from the current directory, not from the models
    file's, which a source written beside that file suggests. Not for a Hub id (``org/name``), whose failure
    vocos_core words already ("no directory of that name here, so a Hub repo")."""
    path = Path(source).expanduser()
    if path.is_absolute() or path.is_dir() or hub_id_shaped(source):
        return ""
    return f" (a relative path is taken from the current directory, {Path.cwd()})"


def mel_front_end_of(model: Vocos) -> MelFrontEnd | None:
    """What ``vocos_core.mel_check`` needs of a mel model's front-end, from its own buffers."""
    fe = model.feature_extractor
    if isinstance(fe, MelSpectrogramFeatures):
        return mel_front_end(fe)
    if isinstance(fe, HiFiGANMelSpectrogramFeatures):
        config = fe.config
        return MelFrontEnd.from_buffers(fe.mel_spec.spectrogram.window, fe.mel_spec.mel_scale.fb, config.log_floor,
                                        magnitude_eps=config.magnitude_eps, name="this model's HiFi-GAN front-end")
    return None


def front_end(config: FeatureExtractorConfig) -> dict[str, Any]:
    """The feature extractor's settings, named alike for every kind of mel front-end."""
    if isinstance(config, EncodecFeaturesConfig):
        bandwidths = list(config.bandwidths)
        return {"type": "encodec", "model": config.encodec_model, "bandwidths_kbps": bandwidths,
                "codebooks": [codebooks_for_bandwidth(b) for b in bandwidths], "codebook_size": ENCODEC_BINS}
    if isinstance(config, MelSpectrogramFeaturesConfig):  # torchaudio's MelSpectrogram, as the reference
        return {"type": "vocos-mel", "n_mels": config.n_mels, "n_fft": config.n_fft, "win_length": config.n_fft,
                "hop_length": config.hop_length, "f_min": 0.0, "f_max": config.sample_rate / 2, "power": 1,
                "mel_scale": "htk", "mel_norm": None, "log": "natural", "log_floor": LOG_CLIP,
                "padding": config.padding}
    return {"type": "hifigan-mel", "n_mels": config.n_mels, "n_fft": config.n_fft, "win_length": config.win_length,
            "hop_length": config.hop_length, "f_min": config.f_min,
            "f_max": config.f_max if config.f_max is not None else config.sample_rate / 2, "power": 1,
            "mel_scale": "slaney", "mel_norm": "slaney", "log": "natural", "log_floor": config.log_floor,
            "padding": config.padding}


def public_name(source: str, revision: str | None) -> str:
    """What clients are told a model is (X-Model-Source, /readyz, /metrics): the Hub id, with ``@revision``
    when one is set, or ``local:<directory name>`` for a local checkpoint, never the server's paths."""
    if is_local(source):
        return f"local:{Path(os.path.abspath(Path(source).expanduser())).name}"  # abspath: "." or "ckpt/.." too
    return f"{source}@{revision}" if revision else source


def is_local(source: str) -> bool:
    """Whether a model source is a local checkpoint directory (else a Hub id)."""
    return Path(source).expanduser().is_dir()


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
