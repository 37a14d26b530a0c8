"""Hyperparameters of each Vocos component, parsed from a checkpoint's ``config.yaml``.

The official Hub layout names each component with a ``class_path`` (the reference package's class)
and its constructor ``init_args``. Each supported class has a frozen dataclass here; parsing is
explicit (known class paths, known argument names and types), so nothing named in a config file is
ever imported or called.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import CheckpointError, UnsupportedError

Padding = Literal["center", "same"]


@dataclasses.dataclass(frozen=True)
class MelSpectrogramFeaturesConfig:
    sample_rate: int = 24000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 100
    padding: Padding = "center"


# Our own class path for the HiFi-GAN front-end: the reference package has no such class, and the
# Vocos PR #47 checkpoints (gemelo-ai/vocos, "Compatibility with TTS systems") reuse the official
# MelSpectrogramFeatures class path with extra init_args instead (see PR47_MEL_ARGS).
HIFIGAN_MEL_CLASS_PATH = "vocos.feature_extractors.HiFiGANMelSpectrogramFeatures"
HIFIGAN_SAMPLE_RATES = (16000, 48000)  # accepted range, inclusive


@dataclasses.dataclass(frozen=True)
class HiFiGANMelSpectrogramFeaturesConfig:
    """The log-mel of jik876/hifi-gan ``meldataset.mel_spectrogram`` (Matcha-TTS, Grad-TTS, VITS, ...).

    ``padding="same"`` is meldataset's framing: reflect-pad ``(n_fft - hop_length) // 2`` per side,
    then an uncentred STFT (``center=False``), giving ``S // hop_length`` frames. ``"center"`` is
    ``torch.stft(center=True)`` (reflect ``n_fft // 2``), ``S // hop_length + 1`` frames.
    Magnitude ``sqrt(re² + im² + magnitude_eps)``; Slaney-scale, Slaney-normalised filterbank
    (librosa's defaults) from ``f_min`` to ``f_max`` (None: ``sample_rate / 2``); ``log(max(., log_floor))``.
    """

    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    f_min: float
    f_max: float | None
    log_floor: float = 1e-5
    padding: Padding = "same"
    magnitude_eps: float = 1e-9


# The bandwidths (kbps) encodec_24khz's quantizer can give: 2, 4, 8, 16 or 32 of its codebooks.
ENCODEC_24KHZ_BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)


@dataclasses.dataclass(frozen=True)
class EncodecFeaturesConfig:
    encodec_model: Literal["encodec_24khz"] = "encodec_24khz"
    bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0)
    train_codebooks: bool = False

    @property
    def sample_rate(self) -> int:
        """The rate of the audio encodec_24khz takes and the vocoder makes."""
        return 24000

    @property
    def hop_length(self) -> int:
        """Audio samples per frame: encodec_24khz makes 75 frames a second at 24 kHz."""
        return 320


@dataclasses.dataclass(frozen=True)
class VocosBackboneConfig:
    input_channels: int
    dim: int
    intermediate_dim: int
    num_layers: int
    layer_scale_init_value: float | None = None
    adanorm_num_embeddings: int | None = None


@dataclasses.dataclass(frozen=True)
class VocosResNetBackboneConfig:
    input_channels: int
    dim: int
    num_blocks: int
    layer_scale_init_value: float | None = None


@dataclasses.dataclass(frozen=True)
class ISTFTHeadConfig:
    dim: int
    n_fft: int
    hop_length: int
    padding: Padding = "same"


@dataclasses.dataclass(frozen=True)
class IMDCTSymExpHeadConfig:
    dim: int
    mdct_frame_len: int
    padding: Padding = "same"
    sample_rate: int | None = None
    clip_audio: bool = False


@dataclasses.dataclass(frozen=True)
class IMDCTCosHeadConfig:
    dim: int
    mdct_frame_len: int
    padding: Padding = "same"
    clip_audio: bool = False


FeatureExtractorConfig = MelSpectrogramFeaturesConfig | HiFiGANMelSpectrogramFeaturesConfig | EncodecFeaturesConfig
BackboneConfig = VocosBackboneConfig | VocosResNetBackboneConfig
HeadConfig = ISTFTHeadConfig | IMDCTSymExpHeadConfig | IMDCTCosHeadConfig


@dataclasses.dataclass(frozen=True)
class VocosConfig:
    feature_extractor: FeatureExtractorConfig
    backbone: BackboneConfig
    head: HeadConfig


# The reference package's class paths, per section. Anything else is refused.
SECTIONS: dict[str, dict[str, type]] = {
    "feature_extractor": {
        "vocos.feature_extractors.MelSpectrogramFeatures": MelSpectrogramFeaturesConfig,
        "vocos.feature_extractors.EncodecFeatures": EncodecFeaturesConfig,
        HIFIGAN_MEL_CLASS_PATH: HiFiGANMelSpectrogramFeaturesConfig,
    },
    "backbone": {
        "vocos.models.VocosBackbone": VocosBackboneConfig,
        "vocos.models.VocosResNetBackbone": VocosResNetBackboneConfig,
    },
    "head": {
        "vocos.heads.ISTFTHead": ISTFTHeadConfig,
        "vocos.heads.IMDCTSymExpHead": IMDCTSymExpHeadConfig,
        "vocos.heads.IMDCTCosHead": IMDCTCosHeadConfig,
    },
}

_C = TypeVar("_C")


def load_config(path: str | Path) -> VocosConfig:
    """Read and validate a Vocos ``config.yaml``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read config ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not a YAML text file (not UTF-8: {e.reason} at byte {e.start})") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML ({e})") from e
    return parse_config(raw, where=str(path))


def parse_config(raw: Any, where: str = "config") -> VocosConfig:
    """Build a :class:`VocosConfig` from the parsed YAML mapping."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{where}: expected a mapping with sections {sorted(SECTIONS)}, got {_kind(raw)}")
    missing = [s for s in SECTIONS if s not in raw]
    if missing:
        raise CheckpointError(f"{where}: missing section(s) {missing}; expected {sorted(SECTIONS)}")
    parts = {name: _parse_section(raw[name], name, choices, where) for name, choices in SECTIONS.items()}
    config = VocosConfig(**parts)
    _check_consistency(config, where)
    return config


def _parse_section(section: Any, name: str, choices: dict[str, type], where: str) -> Any:
    if not isinstance(section, Mapping) or "class_path" not in section:
        raise CheckpointError(f"{where}: section '{name}' needs 'class_path' and 'init_args'")
    # Keys beside these would be ignored (the reference ignores them too): a misspelt init_args would leave
    # every argument at its default, a stray key (an override written one level too high) be dropped.
    # jsonargparse writes an empty dict_kwargs into some configs.
    stray = sorted(str(k) for k in section if k not in ("class_path", "init_args", "dict_kwargs"))
    if stray or section.get("dict_kwargs"):
        keys = stray or ["dict_kwargs"]
        raise CheckpointError(f"{where}: section '{name}' has unknown key(s) {keys}; expected 'class_path' and "
                              "'init_args' (the component's arguments go under init_args)")
    class_path = section["class_path"]
    if not isinstance(class_path, str) or class_path not in choices:
        raise UnsupportedError(
            f"{where}: {name}.class_path {class_path!r} is not supported; valid: {sorted(choices)}"
        )
    args = section.get("init_args") or {}
    if not isinstance(args, Mapping):
        raise CheckpointError(f"{where}: {name}.init_args must be a mapping, got {_kind(args)}")
    if class_path == "vocos.feature_extractors.EncodecFeatures":
        model = args.get("encodec_model", "encodec_24khz")
        if model != "encodec_24khz":
            raise UnsupportedError(
                f"{where}: EncodecFeatures encodec_model {model!r} is not supported; valid: ['encodec_24khz']"
            )
    if class_path == "vocos.feature_extractors.MelSpectrogramFeatures" and PR47_MEL_ARGS.keys() & args.keys():
        return _pr47_mel(args, f"{where}: {name} (MelSpectrogramFeatures with PR #47 arguments)")
    return _build(choices[class_path], args, f"{where}: {name} ({class_path.rsplit('.', 1)[-1]})")


def _build(cls: type[_C], args: Mapping[str, Any], where: str) -> _C:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise CheckpointError(f"{where}: unknown argument(s) {unknown}; valid: {sorted(fields)}")
    hints = get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in args:
            values[name] = _coerce(args[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING:
            raise CheckpointError(f"{where}: required argument {name!r} is missing")
    return cls(**values)


# gemelo-ai/vocos PR #47 adds these MelSpectrogramFeatures arguments (with these defaults), passed
# on to torchaudio's MelSpectrogram: a Slaney filterbank, otherwise the official computation
# (magnitude |X|, log floor 1e-7, window = n_fft). Only the Slaney/Slaney combination is supported.
PR47_MEL_ARGS: dict[str, Any] = {"f_min": 0.0, "f_max": 8000.0, "norm": "slaney", "mel_scale": "slaney"}
PR47_LOG_FLOOR = 1e-7


def _pr47_mel(args: Mapping[str, Any], where: str) -> HiFiGANMelSpectrogramFeaturesConfig:
    """A PR #47 ``MelSpectrogramFeatures`` config as the equivalent HiFi-GAN front-end config."""
    args = {**PR47_MEL_ARGS, **args}
    for key in ("norm", "mel_scale"):
        if args[key] != "slaney":
            raise UnsupportedError(
                f"{where}: {key} {args[key]!r} is not supported; the PR #47 mel front-end is supported "
                f"with norm 'slaney' and mel_scale 'slaney' only"
            )
    del args["norm"], args["mel_scale"]
    official = {f.name: f.default for f in dataclasses.fields(MelSpectrogramFeaturesConfig)}
    unknown = sorted(set(args) - set(official) - set(PR47_MEL_ARGS))
    if unknown:
        valid = sorted(set(official) | set(PR47_MEL_ARGS))
        raise CheckpointError(f"{where}: unknown argument(s) {unknown}; valid: {valid}")
    args = {**official, **args}
    return _build(HiFiGANMelSpectrogramFeaturesConfig,
                  {**args, "win_length": args["n_fft"], "log_floor": PR47_LOG_FLOOR, "magnitude_eps": 0.0}, where)


def check_hifigan_mel(fe: HiFiGANMelSpectrogramFeaturesConfig, where: str = "config") -> None:
    """Ranges :func:`_coerce` cannot express; CheckpointError saying what is expected."""
    lo, hi = HIFIGAN_SAMPLE_RATES
    if not lo <= fe.sample_rate <= hi:
        raise CheckpointError(
            f"{where}: feature_extractor.sample_rate {fe.sample_rate} is out of range; the HiFi-GAN mel "
            f"front-end expects {lo}..{hi} Hz (e.g. 22050)"
        )
    if fe.win_length > fe.n_fft:
        raise CheckpointError(f"{where}: feature_extractor.win_length {fe.win_length} exceeds n_fft {fe.n_fft}")
    if fe.hop_length > fe.n_fft:
        raise CheckpointError(f"{where}: feature_extractor.hop_length {fe.hop_length} exceeds n_fft {fe.n_fft}")
    nyquist = fe.sample_rate / 2
    f_max = nyquist if fe.f_max is None else fe.f_max
    if not 0 <= fe.f_min < f_max <= nyquist:
        raise CheckpointError(
            f"{where}: feature_extractor needs 0 <= f_min < f_max <= sample_rate / 2 ({nyquist:g}); "
            f"got f_min {fe.f_min:g}, f_max {fe.f_max}"
        )
    if fe.log_floor <= 0 or fe.magnitude_eps < 0:
        raise CheckpointError(
            f"{where}: feature_extractor needs log_floor > 0 and magnitude_eps >= 0; "
            f"got {fe.log_floor:g} and {fe.magnitude_eps:g}"
        )


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a field's type; the only conversions are int->float and list->tuple."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is Literal:
        if value not in args:
            raise CheckpointError(f"{where}: {value!r} is not valid; choose one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise CheckpointError(f"{where}: expected a non-empty list, got {_kind(value)}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise CheckpointError(f"{where}: expected true/false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CheckpointError(f"{where}: expected a positive integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckpointError(f"{where}: expected a number, got {value!r}")
        return float(value)
    raise AssertionError(f"unhandled field type {hint}")


def _check_consistency(config: VocosConfig, where: str) -> None:
    fe, bb, head = config.feature_extractor, config.backbone, config.head
    channels = fe.n_mels if isinstance(fe, (MelSpectrogramFeaturesConfig, HiFiGANMelSpectrogramFeaturesConfig)) else 128
    if isinstance(fe, HiFiGANMelSpectrogramFeaturesConfig):
        check_hifigan_mel(fe, where)
    if bb.input_channels != channels:
        raise CheckpointError(
            f"{where}: backbone.input_channels is {bb.input_channels} but the feature extractor "
            f"produces {channels} channels"
        )
    if head.dim != bb.dim:
        raise CheckpointError(f"{where}: head.dim {head.dim} does not match backbone.dim {bb.dim}")
    if isinstance(head, ISTFTHeadConfig) and head.padding == "same" and (head.n_fft - head.hop_length) % 2:
        raise CheckpointError(f"{where}: 'same' padding needs n_fft - hop_length even")
    _check_hops(fe, head, where)
    if isinstance(fe, EncodecFeaturesConfig) and not set(fe.bandwidths) <= set(ENCODEC_24KHZ_BANDWIDTHS):
        raise CheckpointError(f"{where}: feature_extractor.bandwidths {list(fe.bandwidths)} are not all bandwidths "
                              f"of encodec_24khz; choose from {list(ENCODEC_24KHZ_BANDWIDTHS)} kbps")
    if isinstance(fe, EncodecFeaturesConfig) and isinstance(bb, VocosBackboneConfig):
        n = bb.adanorm_num_embeddings
        if n is not None and n != len(fe.bandwidths):
            raise CheckpointError(
                f"{where}: adanorm_num_embeddings {n} does not match {len(fe.bandwidths)} bandwidths"
            )


def _check_hops(fe: FeatureExtractorConfig, head: HeadConfig, where: str) -> None:
    """One head frame per feature frame, and frames that overlap or touch (else the audio has gaps)."""
    feature_hop = fe.hop_length
    if isinstance(head, ISTFTHeadConfig):
        head_hop = head.hop_length
        if head.hop_length > head.n_fft:
            raise CheckpointError(f"{where}: head.hop_length {head.hop_length} is larger than head.n_fft "
                                  f"{head.n_fft}; frames must overlap or touch")
    else:
        head_hop = head.mdct_frame_len // 2
    if head_hop != feature_hop:
        raise CheckpointError(f"{where}: the head's hop ({head_hop} samples) is not the feature extractor's "
                              f"({feature_hop}); each feature frame makes one hop of audio")


def _kind(value: Any) -> str:
    return type(value).__name__
