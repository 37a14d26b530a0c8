"""Sanity check of a log-mel against the front-end a model was trained on.

A mel from another front-end (dB-scaled, ``log10``, mean/std- or min-max-normalised, linear
magnitudes, another log floor) decodes to robotic audio without any error. :func:`check_mel` tells
such inputs apart from real ones with two kinds of evidence:

- **impossible**: values the front-end cannot produce. Its log floor (``log`` of its clamp value)
  is a hard lower limit, and for audio in [-1, 1] a bin's STFT magnitude is at most ``sum|window|``,
  so a mel band is at most ``(sum of the band's filterbank weights) * sum|window|``: the largest
  log-mel is ``log(max_band_sum * sum|window|)`` (:func:`log_mel_bound`; 8.953 for the official
  24 kHz model, whose floor is log(1e-7) = -16.118). dB mels go below the floor (-80, -100),
  linear magnitudes and mels of unscaled int16 audio above the bound.
- **warning**: values in range that carry an exact signature no real audio leaves. Silence in a
  clamped log-mel is the floor, bit for bit; another front-end's silence is another exact value
  repeated across bands (ln 1e-5 = -11.513 for HiFi-GAN's floor, -7 or -5 for ``log10``, 0 for a
  [0, 1] mel, the image of the floor for a normalised one): a *pile*. A mel with mean 0 and
  standard deviation 1, or spanning exactly [0, 1] or [-1, 1], is normalised. A mel with no
  negative value whose bulk lies near 0 is linear.

Distribution-shape rules (spread, level, centring) are deliberately not used: on real audio they
overlap the wrong front-ends (between its 0.5th and 99.5th percentiles, speech in white noise at
0 dB SNR spans 3.8-4.4 nats and pink noise 2.6, where a z-scored clean utterance spans 2.9-7.3 and
a ``log10`` one 4.0-8.8), and the check must never warn on real audio. Robustness comes from
counting instead: out-of-range values must be more than a fraction of the mel, a pile spans
bands and frames. A wrong mel with neither out-of-range values nor a signature (a ``log10`` mel
of audio with no digital silence nor empty band, a mel normalised band by band with dataset
statistics, a power-2 mel of quiet audio) passes.

Usage: ``fe = mel_front_end(vocos.feature_extractor)`` once per model, then ``check_mel(mel, fe)``
per request. It costs a few vectorised numpy passes over the mel (min, max, mean, a comparison or
two): about 50 us for 10 s of mel (100 x 938) on one CPU core, O(n_mels * T).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, NamedTuple

import numpy as np
import torch

from .config import MelSpectrogramFeaturesConfig
from .feature_extractors import MelSpectrogramFeatures
from .spectral_ops import LOG_CLIP, mel_filterbank

Cause = Literal["db_scaled", "log10", "normalized", "linear", "wrong_floor", "out_of_range", "non_finite"]

# Values up to this many nats below log_floor / above log_max are tolerated: float16 transport
# rounds the floor to -16.125, and mels predicted by an acoustic model scatter around the floor
# (a regression error of 0.3 nats std stays within 1.5 nats at 5 sigma). The bound itself is
# already 1.7+ nats above anything real audio reaches, so little tolerance is needed above.
RANGE_TOL_LOW = 1.5
RANGE_TOL_HIGH = 0.5
# Values beyond the tolerance make a mel impossible once they are more than this fraction of its
# values (a handful of predicted outliers is no proof of a wrong front-end) ...
OUTLIER_FRACTION = 1e-3
# ... or as soon as one value is this far out (a factor e**6 = 400 beyond any possible value).
GROSS_NATS = 6.0
# Values below this are dB (floors -80 dB, -100 dB), not a natural log with another clamp
# (log(1e-13) = -29.9).
DB_BELOW = -30.0
# A pile: at least this fraction of the values, and PILE_MIN_COUNT of them, spread over at least
# PILE_MIN_BANDS bands and PILE_MIN_FRAMES frames, equal (to PILE_REL_EPS relative) to the mel's
# minimum (away from the floor) or maximum. Real audio repeats values exactly at the floor (clamped
# silence), in one band of a stationary signal (identical frames), and across the low bands of a
# single frame holding one nonzero sample (a flat spectrum; their filterbank rows sum alike: 12
# bands at one float16 value in the corpus), never in several bands and frames at one value.
# Mels shorter than PILE_MIN_FRAMES frames are not searched for piles.
PILE_FRACTION = 0.01
PILE_MIN_COUNT = 5
PILE_MIN_BANDS = 3
PILE_MIN_FRAMES = 3
PILE_REL_EPS = 1e-4
# The floors of the usual wrong front-ends: ln(10**-k) (a natural log clamped at 10**-k; 1e-5 is
# HiFi-GAN's) and -k (log10 clamped at 10**-k; but -4 is the floor of Tacotron's [-4, 4] mels), for
# 2 <= k <= 15, matched to KNOWN_REL_TOL (float16 rounds ln(1e-5) = -11.5129 to -11.5156). At one
# of these, PILE_MIN_COUNT values over KNOWN_PILE_MIN_BANDS bands and KNOWN_PILE_MIN_FRAMES frames
# make a pile: a real mel's minimum is not such a number, repeated in two bands and two frames.
KNOWN_REL_TOL = 1e-3
# The tops normalised mels are clipped at (Tacotron's symmetric [-4, 4], [0, 1], [-1, 1]): a few
# values there, in two bands and frames, make a pile too.
KNOWN_TOPS = (1.0, 4.0)
KNOWN_PILE_MIN_BANDS = 2
KNOWN_PILE_MIN_FRAMES = 2
# Exact z-score: |mean| and |std - 1| below these (the population std; the sample std of >= 100
# values differs by at most 0.5%).
ZSCORE_MEAN_TOL = 5e-3
ZSCORE_STD_TOL = 1e-2
# Exact min-max normalisation: the range is one of these, to MINMAX_TOL.
MINMAX_RANGES = ((0.0, 1.0), (-1.0, 1.0), (-4.0, 4.0), (0.0, 4.0))
MINMAX_TOL = 1e-3
# A pile at an unnamed value is a normalised mel's floor when the mel is centred (mean within this of
# 0, as with dataset statistics), another clamp's otherwise (natural-log speech has a mean of -1 to -6).
NORMALIZED_MEAN = 1.0
# Linear: no negative value (below -LINEAR_NEG_TOL) and at least LINEAR_BULK of the values below
# LINEAR_TOP_RATIO of the largest. A real log-mel with no negative value is loud broadband noise,
# whose values crowd near their top, not near 0.
LINEAR_NEG_TOL = 1e-6
LINEAR_TOP_RATIO = 0.1
LINEAR_BULK = 0.5

LN10 = math.log(10.0)


@dataclasses.dataclass(frozen=True)
class MelFrontEnd:
    """The range of a log-mel front-end, in natural-log units.

    ``log_floor``: ``log`` of its clamp value (``log(1e-7)`` = -16.118 for Vocos, ``log(1e-5)`` =
    -11.513 for HiFi-GAN's); ``log_max``: the largest log-mel it can produce from audio in [-1, 1]
    (:func:`log_mel_bound`); ``n_mels``: checked against the mel when given.
    """

    log_floor: float
    log_max: float
    n_mels: int | None = None
    name: str = "this model's front-end"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.log_floor) and math.isfinite(self.log_max) and self.log_floor < self.log_max):
            raise ValueError(f"MelFrontEnd: need finite log_floor < log_max, got {self.log_floor}, {self.log_max}")

    @classmethod
    def from_buffers(cls, window: torch.Tensor, filterbank: torch.Tensor, clamp: float, *,
                     magnitude_eps: float = 0.0, name: str = "this model's front-end") -> MelFrontEnd:
        """From a front-end's STFT window, its ``(n_freqs, n_mels)`` filterbank and its clamp value.

        ``magnitude_eps``: for magnitudes computed as ``sqrt(re² + im² + eps)`` (HiFi-GAN's).
        """
        return cls(log_floor=math.log(clamp), log_max=log_mel_bound(window, filterbank, magnitude_eps),
                   n_mels=int(filterbank.shape[1]), name=name)


def log_mel_bound(window: torch.Tensor, filterbank: torch.Tensor, magnitude_eps: float = 0.0) -> float:
    """The largest log-mel a magnitude (power 1) front-end gives audio in [-1, 1].

    ``|X_k| = |sum_n x[n] w[n] e^(-i...)| <= sum_n |w[n]|``, so band m, ``sum_k fb[k, m] |X_k|``, is at
    most ``sum_k fb[k, m] * sum|w|``; the bound is the log of the largest of these. ``filterbank``
    is ``(n_freqs, n_mels)``, as the checkpoints' ``mel_scale.fb`` buffer.
    """
    if filterbank.dim() != 2 or window.dim() != 1:
        raise ValueError(f"expected a (n_freqs, n_mels) filterbank and a 1-D window, got "
                         f"{tuple(filterbank.shape)} and {tuple(window.shape)}")
    band_sum = float(filterbank.detach().double().sum(dim=0).max())
    magnitude = math.sqrt(float(window.detach().double().abs().sum()) ** 2 + magnitude_eps)
    return math.log(band_sum * magnitude)


@functools.lru_cache(maxsize=16)
def _front_end_of_config(config: MelSpectrogramFeaturesConfig) -> MelFrontEnd:
    # The same buffers MelSpectrogramFeatures registers, without building the module.
    fb = mel_filterbank(config.n_fft // 2 + 1, config.n_mels, config.sample_rate)
    return MelFrontEnd.from_buffers(torch.hann_window(config.n_fft), fb, LOG_CLIP)


def mel_front_end(source: MelFrontEnd | MelSpectrogramFeatures | MelSpectrogramFeaturesConfig) -> MelFrontEnd:
    """The description :func:`check_mel` needs, from a model's feature extractor or its config.

    From a module, it is computed from the module's own buffers (as loaded from the checkpoint);
    compute it once per model, not per request.
    """
    if isinstance(source, MelFrontEnd):
        return source
    if isinstance(source, MelSpectrogramFeatures):
        spec = source.mel_spec
        return MelFrontEnd.from_buffers(spec.spectrogram.window, spec.mel_scale.fb, LOG_CLIP)
    if isinstance(source, MelSpectrogramFeaturesConfig):
        return _front_end_of_config(source)
    raise TypeError(f"mel_front_end: expected a MelFrontEnd, MelSpectrogramFeatures or its config, "
                    f"got {type(source).__name__}")


@dataclasses.dataclass(frozen=True)
class MelCheck:
    """Outcome of :func:`check_mel`: at most one of ``impossible`` and ``warning`` is set, with its ``cause``."""

    impossible: str | None = None
    warning: str | None = None
    cause: Cause | None = None

    @property
    def ok(self) -> bool:
        return self.impossible is None and self.warning is None


_GUESS: dict[str, str] = {
    "db_scaled": "a dB-scaled mel (20*log10 or 10*log10, ref/top_db clipping)?",
    "linear": "linear magnitudes, not their natural log?",
    "wrong_floor": "a natural-log mel with a lower clamp than this front-end's?",
    "out_of_range": ("a mel of power=2 (|X|², log of a power spectrogram)? of audio not scaled to [-1, 1] "
                     "(int16 PCM values)? a dB-scaled mel?"),
}


def check_mel(mel: torch.Tensor | np.ndarray,
              front_end: MelFrontEnd | MelSpectrogramFeatures | MelSpectrogramFeaturesConfig) -> MelCheck:
    """Check that a ``(n_mels, T)`` log-mel can come from ``front_end``; see the module docstring.

    The rules run in order and the first that finds something answers: values no front-end gives,
    silence or a constant, normalisation, clipping, linear magnitudes.
    """
    fe = mel_front_end(front_end)
    a = as_float_matrix(mel)
    if fe.n_mels is not None and a.shape[0] != fe.n_mels:
        raise ValueError(f"check_mel: expected ({fe.n_mels}, T), got {a.shape}")
    lo, hi = float(a.min()), float(a.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return MelCheck(impossible="the mel holds NaN or infinite values", cause="non_finite")
    span = _Span(lo, hi, float(a.mean(dtype=np.float64)))
    for rule in (_out_of_range, _silent_or_constant, _normalised, _piled, _linear):
        found = rule(fe, a, span)
        if found is not None:
            return found
    return MelCheck()


class _Span(NamedTuple):
    """The mel's smallest, largest and mean value."""

    lo: float
    hi: float
    mean: float


def _out_of_range(fe: MelFrontEnd, a: np.ndarray, span: _Span) -> MelCheck | None:
    floor, top = fe.log_floor, fe.log_max
    allowed = OUTLIER_FRACTION * a.size
    above = span.hi > top + RANGE_TOL_HIGH and (
        span.hi > top + GROSS_NATS or int(np.count_nonzero(a > top + RANGE_TOL_HIGH)) > allowed)
    below = span.lo < floor - RANGE_TOL_LOW and (
        span.lo < floor - GROSS_NATS or int(np.count_nonzero(a < floor - RANGE_TOL_LOW)) > allowed)
    return impossible(fe, a, span.lo, span.hi, above, below) if above or below else None


def _silent_or_constant(fe: MelFrontEnd, a: np.ndarray, span: _Span) -> MelCheck | None:
    if span.hi <= fe.log_floor + RANGE_TOL_HIGH:
        return MelCheck()  # silence: everything at the floor
    if span.lo == span.hi:
        return _warn("wrong_floor", f"every mel value is {span.lo:.4g}; {fe.name} gives silence as "
                     f"{fe.log_floor:.3f} everywhere and anything else varies")
    return None


def _normalised(fe: MelFrontEnd, a: np.ndarray, span: _Span) -> MelCheck | None:
    for r_lo, r_hi in MINMAX_RANGES:
        if abs(span.lo - r_lo) <= MINMAX_TOL and abs(span.hi - r_hi) <= MINMAX_TOL:
            return _warn("normalized", f"the mel spans exactly [{r_lo:g}, {r_hi:g}]: a min-max normalised mel? "
                         f"{_expected(fe)}")
    if abs(span.mean) <= ZSCORE_MEAN_TOL:
        std = float(a.std(dtype=np.float64))
        if abs(std - 1.0) <= ZSCORE_STD_TOL:
            per_band = a.shape[1] > 1 and float(np.abs(a.mean(axis=1)).max()) <= 10 * ZSCORE_MEAN_TOL
            how = "each band normalised to mean 0, std 1" if per_band else "mean/std-normalised"
            return _warn("normalized", f"the mel has mean {span.mean:.3f} and standard deviation {std:.3f}: "
                         f"{how}? {_expected(fe)}")
    return None


def _piled(fe: MelFrontEnd, a: np.ndarray, span: _Span) -> MelCheck | None:
    """Many values at exactly the smallest or the largest: a clipped (normalised) mel, or a wrong floor."""
    if a.shape[1] < PILE_MIN_FRAMES:
        return None
    lo, hi = span.lo, span.hi
    top_pile = _pile(a >= hi - _eps(hi), any(abs(hi - v) <= MINMAX_TOL for v in KNOWN_TOPS))
    if lo > fe.log_floor + RANGE_TOL_HIGH:
        known = _known_floor(lo)
        bottom = _pile(a <= lo + _eps(lo), known is not None)
        if bottom is not None and top_pile is not None:
            return _warn("normalized", f"the mel is clipped at both ends, {bottom} at {lo:.4g} and more at "
                         f"{hi:.4g}: a normalised, clipped mel? {_expected(fe)}")
        if bottom is not None:
            return _floor_pile(fe, a, bottom, lo, hi, span.mean, known)
    if top_pile is not None:
        return _warn("normalized", f"the mel is clipped at its top: {top_pile} sit at exactly {hi:.4g}, which "
                     f"no loud sound gives in several bands at once: a normalised, clipped mel? {_expected(fe)}")
    return None


def _linear(fe: MelFrontEnd, a: np.ndarray, span: _Span) -> MelCheck | None:
    if span.lo < -LINEAR_NEG_TOL:
        return None
    bulk = _bulk_near_zero(a, span.hi)
    if bulk < LINEAR_BULK:
        return None
    return _warn("linear", f"no mel value is negative and {bulk:.0%} of them are below a tenth of the "
                 f"largest ({span.hi:.3g}): linear magnitudes, not their natural log? {_expected(fe)}")


def as_float_matrix(mel: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float32 numpy view (or copy) of the mel: numpy's reductions and counts are several times
    faster than torch's on one CPU thread at this size."""
    if isinstance(mel, torch.Tensor):
        if not mel.is_floating_point():
            raise TypeError(f"check_mel: expected floating-point values, got {mel.dtype}")
        a = mel.detach().to(device="cpu", dtype=torch.float32).numpy()
    elif isinstance(mel, np.ndarray):
        if mel.dtype.kind != "f":
            raise TypeError(f"check_mel: expected floating-point values, got {mel.dtype}")
        a = mel.astype(np.float32, copy=False)
    else:
        raise TypeError(f"check_mel: expected a torch.Tensor or numpy array, got {type(mel).__name__}")
    if a.ndim != 2:
        raise ValueError(f"check_mel: expected shape (n_mels, T), got {a.shape}")
    if a.size == 0:
        raise ValueError(f"check_mel: empty mel {a.shape}")
    return a


def _expected(fe: MelFrontEnd) -> str:
    return (f"{fe.name} expects natural-log magnitudes: silence at {fe.log_floor:.3f}, "
            f"nothing above {fe.log_max:.2f}")


def _warn(cause: Cause, message: str) -> MelCheck:
    return MelCheck(warning=message, cause=cause)


def impossible(fe: MelFrontEnd, a: np.ndarray, lo: float, hi: float, above: bool, below: bool) -> MelCheck:
    cause: Cause
    # linear: the bulk near 0 and nothing far below it (a predicted linear mel scatters around 0)
    if lo >= -LINEAR_TOP_RATIO * hi and np.count_nonzero(np.abs(a) < LINEAR_TOP_RATIO * hi) >= LINEAR_BULK * a.size:
        cause = "linear"
    elif below and (lo <= DB_BELOW or above):
        cause = "db_scaled"
    elif below:
        cause = "wrong_floor"
    else:
        cause = "out_of_range"
    parts = []
    if above:
        parts.append(f"mel values reach {hi:.4g}, above {fe.log_max:.2f}, the largest log magnitude "
                     f"{fe.name} can produce from audio in [-1, 1]")
    if below:
        parts.append(f"mel values go down to {lo:.4g}, below {fe.log_floor:.3f}, the log floor of {fe.name}")
    return MelCheck(impossible="; ".join(parts) + f": the input is not a natural-log mel of this front-end "
                    f"({_GUESS[cause]})", cause=cause)


def _eps(value: float) -> float:
    return PILE_REL_EPS * max(1.0, abs(value))


def _pile(mask: np.ndarray, known: bool = False) -> str | None:
    """``"N% of the values, in B bands,"`` when the values where ``mask`` holds (those equal to the
    mel's minimum or maximum) form a pile, else None. At a known floor value, a few make a pile."""
    count = np.count_nonzero(mask)
    if count < (PILE_MIN_COUNT if known else max(PILE_MIN_COUNT, PILE_FRACTION * mask.size)):
        return None
    bands = np.count_nonzero(mask.any(axis=1))
    if bands < (KNOWN_PILE_MIN_BANDS if known else PILE_MIN_BANDS):
        return None
    if np.count_nonzero(mask.any(axis=0)) < (KNOWN_PILE_MIN_FRAMES if known else PILE_MIN_FRAMES):
        return None
    return f"{count / mask.size:.0%} of the values, in {bands} bands,"


def _bulk_near_zero(a: np.ndarray, hi: float) -> float:
    """Fraction of the values below a tenth of the largest (for a mel with no negative value)."""
    return np.count_nonzero(a < LINEAR_TOP_RATIO * hi) / a.size


def _known_floor(value: float) -> tuple[Cause, int] | None:
    """``("wrong_floor", k)`` at ``ln(10**-k)``, ``("log10", k)`` at ``-k`` (2 <= k <= 15), except
    ``("normalized", 4)`` at -4: Tacotron's [-4, 4] mels are common, log10 clamped at 1e-4 is not."""
    candidates: tuple[tuple[Cause, float], ...] = (("wrong_floor", LN10), ("log10", 1.0))
    for cause, unit in candidates:
        k = round(-value / unit)
        if 2 <= k <= 15 and abs(value + k * unit) <= KNOWN_REL_TOL * abs(value):
            return ("normalized", 4) if (cause, k) == ("log10", 4) else (cause, k)
    return None


def _floor_pile(fe: MelFrontEnd, a: np.ndarray, pile: str, lo: float, hi: float, mean: float,
                known: tuple[Cause, int] | None) -> MelCheck:
    """Name the front-end whose silence (its floor) sits at ``lo``."""
    where = f"{pile} sit at exactly {lo:.4g}, where {fe.name} puts silence at {fe.log_floor:.3f}"
    if known is not None and known[0] == "wrong_floor":
        extra = " (HiFi-GAN, Matcha-TTS, F5-TTS style)" if known[1] == 5 else ""
        return _warn("wrong_floor", f"{where}: a natural-log mel clamped at 1e-{known[1]}{extra} instead of "
                     f"{math.exp(fe.log_floor):.0e}?")
    if known is not None and known[0] == "normalized":
        return _warn("normalized", f"{where}: a Tacotron-style mel normalised to [-4, 4]? {_expected(fe)}")
    if known is not None:
        return _warn("log10", f"{where}: a log10 mel (log10(clamp(x, 1e-{known[1]}))) instead of a natural-log "
                     f"one? {_expected(fe)}")
    if -PILE_REL_EPS <= lo <= 1e-3:
        # linear magnitudes (clamped at 0, 1e-7, 1e-5...) span decades: most of the values off the
        # pile are near 0; a [0, 1] mel (dB shifted and scaled) spreads them over its range
        rest = a[a > lo + _eps(lo)]
        if rest.size and _bulk_near_zero(rest, hi) >= LINEAR_BULK:
            return _warn("linear", f"{where}: linear magnitudes, not their natural log? {_expected(fe)}")
        if hi <= 1.0 + MINMAX_TOL:
            return _warn("normalized", f"{where}: a mel normalised to [0, 1]? {_expected(fe)}")
        return _warn("wrong_floor", f"{where}: log(1 + x) or a mel shifted to start at 0? {_expected(fe)}")
    if abs(lo + 1.0) <= PILE_REL_EPS and hi <= 1.0 + MINMAX_TOL:
        return _warn("normalized", f"{where}: a mel normalised to [-1, 1]? {_expected(fe)}")
    if abs(mean) > NORMALIZED_MEAN:
        return _warn("wrong_floor", f"{where}: a natural-log mel with another clamp value (exp({lo:.3g}))?")
    return _warn("normalized", f"{where}: a normalised mel (the floor shifted and scaled to {lo:.3g})? "
                 f"{_expected(fe)}")
