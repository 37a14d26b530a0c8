"""The range rule of :func:`vocos_core.mel_check.check_mel` for a mel that arrives in chunks (a stream).

A stream cannot wait for its whole mel before decoding, so it is held to the rule that needs no whole
mel: values the front-end cannot produce (:mod:`vocos_core.mel_check`'s "impossible" evidence), counted
over all the frames received so far. A chunk is refused as soon as the frames up to it would be
refused as one request, except that a stream's first frames may hold a handful of outliers
(:data:`STREAM_OUTLIER_ALLOWANCE`) beyond the request's fraction of them: a whole request dilutes an
early glitch with all its later frames, which a stream has not yet sent. The frames before a refused
chunk have been decoded already. The warnings' signatures
(piles, normalisation, linear magnitudes) are judged on a whole mel and are not checked for streams.

Usage: ``check = StreamMelCheck(front_end)`` per stream, then ``check.update(chunk)`` per chunk; it
costs what :func:`check_mel` costs on the chunk alone, and keeps a few numbers between chunks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import MelSpectrogramFeaturesConfig
from .feature_extractors import MelSpectrogramFeatures
from .mel_check import (
    GROSS_NATS,
    OUTLIER_FRACTION,
    RANGE_TOL_HIGH,
    RANGE_TOL_LOW,
    MelCheck,
    MelFrontEnd,
    as_float_matrix,
    impossible,
    mel_front_end,
)

# Values beyond the range a stream may hold at any point, however few its frames: a frame-by-frame stream
# would otherwise be refused for its first predicted outlier (0.1 % of one 100-band frame is 0.1 values),
# which the same mel sent whole passes. Half a frame of 100 bands; the request's fraction takes over
# beyond 50 000 values (500 such frames, 5.3 s at 24 kHz).
STREAM_OUTLIER_ALLOWANCE = 50


class StreamMelCheck:
    """Tallies of one stream's mel: its smallest and largest value, how many values lie beyond the
    front-end's range (with :data:`~vocos_core.mel_check.RANGE_TOL_LOW` / ``_HIGH``), out of how many."""

    def __init__(self, front_end: MelFrontEnd | MelSpectrogramFeatures | MelSpectrogramFeaturesConfig) -> None:
        self.front_end = mel_front_end(front_end)
        self.lo = math.inf
        self.hi = -math.inf
        self.above = 0
        self.below = 0
        self.size = 0

    def update(self, chunk: torch.Tensor | np.ndarray) -> MelCheck:
        """Add a chunk ``(n_mels, t)``; a check with ``impossible`` set when the mel so far is refused
        (as :func:`~vocos_core.mel_check.check_mel` would refuse it whole), else an empty one."""
        fe, a = self.front_end, as_float_matrix(chunk)
        lo, hi = float(a.min()), float(a.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return MelCheck(impossible="the mel holds NaN or infinite values", cause="non_finite")
        self.lo, self.hi, self.size = min(self.lo, lo), max(self.hi, hi), self.size + a.size
        self.above += int(np.count_nonzero(a > fe.log_max + RANGE_TOL_HIGH))
        self.below += int(np.count_nonzero(a < fe.log_floor - RANGE_TOL_LOW))
        allowed = max(OUTLIER_FRACTION * self.size, STREAM_OUTLIER_ALLOWANCE)
        above = self.hi > fe.log_max + RANGE_TOL_HIGH and (self.hi > fe.log_max + GROSS_NATS or self.above > allowed)
        below = self.lo < fe.log_floor - RANGE_TOL_LOW and (
            self.lo < fe.log_floor - GROSS_NATS or self.below > allowed)
        # The cause (dB, linear, another floor) is named from this chunk's values, the stream's extremes.
        return impossible(fe, a, self.lo, self.hi, above, below) if above or below else MelCheck()
