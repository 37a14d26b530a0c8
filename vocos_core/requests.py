"""The arrays of a request, checked against a model: a mel grid, a token grid, a bandwidth choice.

numpy in, numpy out, raising :class:`InputError` with what was expected: the one place where the
meaning of an input is checked, for the service (which only parses bytes into arrays) and any other
caller that takes arrays from outside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InputError
from .feature_extractors import ENCODEC_BINS as CODEBOOK_SIZE
from .inputs import check_code_values


def mel_array(array: np.ndarray, n_mels: int, *, first_frame: int = 0) -> np.ndarray:
    """Validate a mel spectrogram ``(n_mels, T)`` (or ``(1, n_mels, T)``) and return it as float32.
    ``first_frame``: the index its first frame has in the errors (a stream's chunk: the frames before it)."""
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InputError(
            f"expected a 2-D mel spectrogram of shape ({n_mels}, T); got shape {array.shape}"
        )
    if array.shape[0] != n_mels:
        hint = " (it looks transposed: send mel bands as rows)" if array.shape[1] == n_mels else ""
        raise InputError(f"expected {n_mels} mel bands (rows), got {array.shape[0]}{hint}")
    if array.shape[1] < 1:
        raise InputError(
            f"the mel spectrogram has no frames; expected shape ({n_mels}, T) with T >= 1"
        )
    if array.dtype.kind != "f":
        raise InputError(
            f"expected float32 mel values (float16/float64 are converted), got {_dtype_words(array.dtype)}"
        )
    _check_finite(array, "mel spectrogram", first_frame)
    with np.errstate(over="ignore"):  # finite float64 values beyond float32's range become inf
        converted = array.astype(np.float32, copy=False)
    if converted is not array and not np.isfinite(converted).all():
        band, frame = (int(i) for i in np.argwhere(~np.isfinite(converted))[0])
        raise InputError(f"the mel spectrogram holds values beyond float32's range (±3.4e38), first at index "
                         f"{(band, frame + first_frame)}: {array[band, frame]:.4g}; log-mel values lie within "
                         "about ±20")
    return np.ascontiguousarray(converted)


def codes_array(array: np.ndarray) -> np.ndarray:
    """Validate an EnCodec token grid ``(K, T)``, or one item of a batch, ``(K, 1, T)`` (Vocos' layout) or
    ``(1, K, T)`` (what EnCodec's ``encode`` returns), and return it as int64 ``(K, T)``."""
    if array.ndim == 3 and 1 in array.shape[:2]:
        array = array[:, 0] if array.shape[1] == 1 else array[0]
    if array.ndim != 2:
        raise InputError(
            f"expected a 2-D token grid of shape (K codebooks, T), or one item as (K, 1, T) or (1, K, T); "
            f"got shape {array.shape}{_batch_hint(array.shape)}"
        )
    if array.shape[1] < 1 or array.shape[0] < 1:
        raise InputError(f"the token grid is empty (shape {array.shape}); expected (K, T) with T >= 1")
    if array.dtype.kind == "f":
        _refuse_float_codes(array)
    if array.dtype.kind not in "iu":
        raise InputError(f"expected integer codes, got {_dtype_words(array.dtype)}")
    check_code_values(int(array.min()), int(array.max()), CODEBOOK_SIZE)
    return np.ascontiguousarray(array.astype(np.int64, copy=False))


def _refuse_float_codes(array: np.ndarray) -> None:
    """Say what is wrong with float codes ``(K, T)``: a value that is no code, else only the dtype."""
    whole = np.isfinite(array) & (array == np.trunc(array))
    if not whole.all():
        row, frame = (int(i) for i in np.argwhere(~whole)[0])
        raise InputError(f"expected integer codes, got {array.dtype} values such as {array[row, frame]:g} at index "
                         f"{(row, frame)}; codes are whole numbers in [0, {CODEBOOK_SIZE})")
    # Out-of-range values first: a whole number past int64 (a JSON body's) is no code whatever its type.
    check_code_values(int(array.min()), int(array.max()), CODEBOOK_SIZE)
    raise InputError(f"expected integer codes, got {array.dtype} (whole numbers: send them as an integer "
                     "dtype, e.g. codes.astype(np.int64))")


def resolve_bandwidth_id(
    bandwidths: Sequence[float],
    codebooks: Sequence[int],
    *,
    bandwidth_id: int | None = None,
    bandwidth: float | None = None,
    num_codebooks: int | None = None,
    frames: int | None = None,
) -> int:
    """The bandwidth id from an id, a kbps value, or (when neither is given) the number of codebooks.

    ``bandwidths[i]`` is the kbps of id i and ``codebooks[i]`` its number of codebooks. Raises
    ``InputError`` listing the valid choices when a value is unknown or the values disagree.
    ``frames``: the grid's T, to say when a K that fits no bandwidth looks like a transposed ``(T, K)`` grid.
    """
    if not bandwidths:
        raise InputError("bandwidth_id and bandwidth apply to EnCodec models only; this model has no bandwidths")
    choices = ", ".join(
        f"{i}={_kbps(b)} kbps ({k} codebooks)"
        for i, (b, k) in enumerate(zip(bandwidths, codebooks, strict=True))
    )
    resolved = _explicit_bandwidth_id(bandwidths, bandwidth_id, bandwidth, choices)
    if resolved is None:
        if num_codebooks is None:
            raise InputError(f"a bandwidth is required: bandwidth_id or bandwidth, one of {choices}")
        if num_codebooks not in codebooks:
            raise InputError(
                f"cannot infer the bandwidth from {num_codebooks} codebooks; "
                f"expected K in {sorted(set(codebooks))}, one of {choices}"
                f"{_transposed(frames in codebooks) or _residual_hint(num_codebooks, codebooks)}"
            )
        return list(codebooks).index(num_codebooks)
    if num_codebooks is not None and codebooks[resolved] != num_codebooks:
        expected = codebooks[resolved]
        raise InputError(
            f"bandwidth {_kbps(bandwidths[resolved])} kbps (id {resolved}) expects {expected} codebooks,"
            f" got K={num_codebooks}{_transposed(frames == expected) or _residual_hint(num_codebooks, [expected])}"
        )
    return resolved


def _residual_hint(num_codebooks: int, codebooks: Sequence[int]) -> str:
    """Say how to send a grid of more codebooks than a bandwidth takes: EnCodec's quantizer is residual, so
    the first k rows of a grid encoded at a higher bandwidth (24 kbps: 32 rows) are the codes at k codebooks."""
    fewer = [k for k in codebooks if k < num_codebooks]
    if not fewer:
        return ""
    k = max(fewer)
    return (f"; codebooks are residual, so the first rows of a larger grid are the codes at a lower bandwidth: "
            f"send codes[:{k}] for {k} codebooks")


def _batch_hint(shape: tuple[int, ...]) -> str:
    """Name a batch of several items, EnCodec's ``(B, K, T)`` or Vocos' ``(K, B, T)``, as one."""
    if len(shape) == 3 and shape[0] > 1 and shape[1] > 1:
        return (" (a batch of several items, (B, K, T) or (K, B, T)? send each item as its own request or "
                "stream, shape (K, T); the server batches concurrent ones)")
    return ""


def _transposed(likely: bool) -> str:
    return " (it looks transposed: send the codebooks as rows, shape (K, T))" if likely else ""


def _explicit_bandwidth_id(bandwidths: Sequence[float], bandwidth_id: int | None, bandwidth: float | None,
                           choices: str) -> int | None:
    """The id that ``bandwidth_id`` and/or ``bandwidth`` (kbps) name, or None when neither is given."""
    resolved: int | None = None
    if bandwidth_id is not None:
        if not 0 <= bandwidth_id < len(bandwidths):
            raise InputError(f"unknown bandwidth_id {bandwidth_id}; expected one of {choices}")
        resolved = bandwidth_id
    if bandwidth is not None:
        matches = [i for i, b in enumerate(bandwidths) if math.isclose(b, bandwidth, rel_tol=1e-6)]
        if not matches:
            raise InputError(f"unknown bandwidth {bandwidth:g} kbps; expected one of {choices}")
        if resolved is not None and resolved != matches[0]:
            raise InputError(
                f"bandwidth_id {resolved} and bandwidth {bandwidth:g} kbps disagree; "
                f"give one of them ({choices})"
            )
        resolved = matches[0]
    return resolved


def _check_finite(array: np.ndarray, what: str, first_frame: int = 0) -> None:
    """Refuse NaN and Inf in ``array`` ``(rows, T)``, naming the first as ``(row, first_frame + frame)``."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        row, frame = (int(i) for i in np.argwhere(~finite)[0])
        raise InputError(f"the {what} contains {bad} NaN or Inf value(s), first at index {(row, frame + first_frame)}")


def _dtype_words(dtype: np.dtype) -> str:
    names = {"b": "boolean", "U": "string", "S": "bytes", "O": "object", "c": "complex"}
    return names.get(dtype.kind, str(dtype))


def _kbps(value: float) -> str:
    return f"{value:g}"


