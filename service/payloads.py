"""Request bodies of the decode endpoints: JSON or ``.npy``, parsed and validated into arrays.

``.npy`` is parsed by our own header check plus ``np.frombuffer`` rather than ``np.load``: the header's
shape is checked against the body length before anything is allocated, so a 100-byte body cannot
claim a terabyte array, and pickled (object) arrays are refused without being touched.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service import json_body
from service.echo import clip
from service.errors import InvalidInputError, MalformedPayloadError, UnsupportedMediaTypeError, without_addresses

JSON_TYPES = frozenset({"application/json"})
NPY_TYPES = frozenset({"application/x-npy", "application/npy", "application/octet-stream"})
NPY_MAGIC = b"\x93NUMPY"
CODEBOOK_SIZE = 1024
NPY_MAX_DIMS = 32  # numpy's own limit is 64; no input of ours has more than 3


def media_type(content_type: str | None) -> str:
    """``"application/json; charset=utf-8"`` -> ``"application/json"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """Whether ``content_type`` is JSON (``application/json`` or a ``+json`` type)."""
    kind = media_type(content_type)
    return kind in JSON_TYPES or kind.endswith("+json")


def body_kind(content_type: str | None, body: bytes) -> str:
    """``"json"`` or ``"npy"``, from the Content-Type (sniffed from the body when there is none)."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind.endswith("+json"):
        return "json"
    if kind in NPY_TYPES:
        return "npy"
    if not kind:
        if body.startswith(NPY_MAGIC):
            return "npy"
        if body.lstrip()[:1] == b"{":
            return "json"
    raise UnsupportedMediaTypeError(
        f"unsupported Content-Type {clip(kind) if kind else '(none)'}; expected application/json or application/x-npy"
    )


# A loaded body: the fields of a JSON object (nested lists as arrays), the type name of a JSON value
# that is no object, or the array of a .npy body.
Payload = dict[str, Any] | str | np.ndarray


def load_payload(body: bytes, kind: str) -> Payload:
    """Parse a ``"json"`` or ``"npy"`` body (in this process: the server sends large JSON bodies to
    its parser process, ``service.json_parser``, which returns the same)."""
    if kind != "json":
        return parse_npy(body)
    try:
        return json_body.load(body)
    except json_body.JsonBodyError as exc:
        raise from_json_error(exc) from None


def from_json_error(exc: json_body.JsonBodyError) -> MalformedPayloadError | InvalidInputError:
    return MalformedPayloadError(str(exc)) if exc.malformed else InvalidInputError(str(exc))


def json_fields(payload: Payload, allowed_keys: Sequence[str]) -> dict[str, Any]:
    """The fields of a JSON object whose keys are among ``allowed_keys``."""
    if not isinstance(payload, dict):
        raise InvalidInputError(f"expected a JSON object with keys {list(allowed_keys)}, got {payload}")
    unknown = sorted(set(payload) - set(allowed_keys))
    if unknown:
        # At most a few names, clipped: the message must not echo an arbitrarily large body.
        shown = [key[:40] for key in unknown[:5]]
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidInputError(f"unknown JSON keys {shown}{more}; expected keys among {list(allowed_keys)}")
    return payload


def json_array(value: Any, name: str) -> np.ndarray:
    """A field that must be a nested JSON list of numbers (loaded as an array)."""
    if not isinstance(value, np.ndarray):
        raise InvalidInputError(f"'{name}' must be a nested list of numbers, got {type(value).__name__}")
    return value


def parse_npy(body: bytes) -> np.ndarray:
    """The array of a ``.npy`` body; 400 when it is not a well-formed, complete ``.npy`` file."""
    if not body.startswith(NPY_MAGIC):
        raise MalformedPayloadError("body is not a .npy file (it does not start with the \\x93NUMPY magic)")
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise MalformedPayloadError(f"unsupported .npy format version {version}; expected 1.0 or 2.0")
    except MalformedPayloadError:
        raise
    except Exception as exc:  # numpy raises ValueError/SyntaxError/EOFError on broken headers
        raise MalformedPayloadError(f"malformed .npy header: {without_addresses(str(exc))}") from None
    if dtype.hasobject or dtype.fields is not None:
        raise InvalidInputError(
            f"unsupported .npy dtype {dtype}; expected a plain numeric array (no objects, no records)"
        )
    _check_npy_layout(shape, dtype)
    data = memoryview(body)[stream.tell() :]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise MalformedPayloadError(
            f".npy header declares shape {tuple(shape)} of {dtype} ({expected} bytes) "
            f"but the body holds {len(data)}"
        )
    try:
        array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    except ValueError as exc:  # numpy's own limits on sizes, past the checks above
        raise MalformedPayloadError(f"malformed .npy header: shape {tuple(shape)}: {exc}") from None
    return array.astype(array.dtype.newbyteorder("="), copy=True)


def _check_npy_layout(shape: object, dtype: np.dtype) -> None:
    """A header's shape is a short tuple of sizes, its dtype a scalar one: numpy's header reader
    accepts any Python literal there, such as negative or boolean sizes and sub-array dtypes."""
    sizes = shape if isinstance(shape, tuple) else ()
    valid = (
        isinstance(shape, tuple)
        and len(sizes) <= NPY_MAX_DIMS
        and all(type(n) is int and 0 <= n < 2**48 for n in sizes)
    )
    if not valid:
        shown = repr(shape)[:80]
        raise MalformedPayloadError(
            f"malformed .npy header: shape {shown}; expected a tuple of at most {NPY_MAX_DIMS} sizes >= 0"
        )
    if dtype.subdtype is not None:
        raise MalformedPayloadError(
            f"malformed .npy header: sub-array dtype {str(dtype)[:40]}; expected a plain numeric dtype"
        )


def mel_array(array: np.ndarray, n_mels: int) -> np.ndarray:
    """Validate a mel spectrogram ``(n_mels, T)`` (or ``(1, n_mels, T)``) and return it as float32."""
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InvalidInputError(
            f"expected a 2-D mel spectrogram of shape ({n_mels}, T); got shape {array.shape}"
        )
    if array.shape[0] != n_mels:
        hint = " (it looks transposed: send mel bands as rows)" if array.shape[1] == n_mels else ""
        raise InvalidInputError(f"expected {n_mels} mel bands (rows), got {array.shape[0]}{hint}")
    if array.shape[1] < 1:
        raise InvalidInputError(
            f"the mel spectrogram has no frames; expected shape ({n_mels}, T) with T >= 1"
        )
    if array.dtype.kind != "f":
        raise InvalidInputError(
            f"expected float32 mel values (float16/float64 are converted), got {_dtype_words(array.dtype)}"
        )
    with np.errstate(over="ignore"):  # float64 values beyond float32 become inf, refused just below
        array = array.astype(np.float32, copy=False)
    _check_finite(array, "mel spectrogram")
    return np.ascontiguousarray(array)


def codes_array(array: np.ndarray) -> np.ndarray:
    """Validate an EnCodec token grid ``(K, T)`` (or ``(K, 1, T)``) and return it as int64."""
    if array.ndim == 3 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 2:
        raise InvalidInputError(
            f"expected a 2-D token grid of shape (K codebooks, T); got shape {array.shape}"
        )
    if array.shape[1] < 1 or array.shape[0] < 1:
        raise InvalidInputError(f"the token grid is empty (shape {array.shape}); expected (K, T) with T >= 1")
    if array.dtype.kind not in "iu":
        raise InvalidInputError(f"expected integer codes, got {_dtype_words(array.dtype)}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= CODEBOOK_SIZE:
        bad = low if low < 0 else high
        raise InvalidInputError(f"codes must lie in [0, {CODEBOOK_SIZE}); found {bad}")
    return np.ascontiguousarray(array.astype(np.int64, copy=False))


def resolve_bandwidth_id(
    bandwidths: Sequence[float],
    codebooks: Sequence[int],
    *,
    bandwidth_id: int | None = None,
    bandwidth: float | None = None,
    num_codebooks: int | None = None,
) -> int:
    """The bandwidth id from an id, a kbps value, or (when neither is given) the number of codebooks.

    ``bandwidths[i]`` is the kbps of id i and ``codebooks[i]`` its number of codebooks. Raises
    ``InvalidInputError`` listing the valid choices when a value is unknown or the values disagree.
    """
    choices = ", ".join(
        f"{i}={_kbps(b)} kbps ({k} codebooks)"
        for i, (b, k) in enumerate(zip(bandwidths, codebooks, strict=True))
    )
    resolved: int | None = None
    if bandwidth_id is not None:
        if not 0 <= bandwidth_id < len(bandwidths):
            raise InvalidInputError(f"unknown bandwidth_id {bandwidth_id}; expected one of {choices}")
        resolved = bandwidth_id
    if bandwidth is not None:
        matches = [i for i, b in enumerate(bandwidths) if math.isclose(b, bandwidth, rel_tol=1e-6)]
        if not matches:
            raise InvalidInputError(f"unknown bandwidth {bandwidth:g} kbps; expected one of {choices}")
        if resolved is not None and resolved != matches[0]:
            raise InvalidInputError(
                f"bandwidth_id {resolved} and bandwidth {bandwidth:g} kbps disagree; "
                f"give one of them ({choices})"
            )
        resolved = matches[0]
    if resolved is None:
        if num_codebooks is None:
            raise InvalidInputError(f"a bandwidth is required: bandwidth_id or bandwidth, one of {choices}")
        if num_codebooks not in codebooks:
            raise InvalidInputError(
                f"cannot infer the bandwidth from {num_codebooks} codebooks; "
                f"expected K in {sorted(set(codebooks))}"
                f" or an explicit bandwidth ({choices})"
            )
        return list(codebooks).index(num_codebooks)
    if num_codebooks is not None and codebooks[resolved] != num_codebooks:
        raise InvalidInputError(
            f"bandwidth {_kbps(bandwidths[resolved])} kbps (id {resolved}) "
            f"expects {codebooks[resolved]} codebooks,"
            f" got K={num_codebooks}"
        )
    return resolved


def optional_int(fields: Mapping[str, Any], key: str) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"'{key}' must be an integer, got {value!r}")
    return value


def optional_float(fields: Mapping[str, Any], key: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"'{key}' must be a number, got {value!r}")
    return float(value)


def _check_finite(array: np.ndarray, what: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InvalidInputError(f"the {what} contains {bad} NaN or Inf value(s), first at index {first}")


def _dtype_words(dtype: np.dtype) -> str:
    names = {"b": "boolean", "U": "string", "S": "bytes", "O": "object", "c": "complex"}
    return names.get(dtype.kind, str(dtype))


def _kbps(value: float) -> str:
    return f"{value:g}"


def mel_input(payload: Payload, n_mels: int) -> np.ndarray:
    """The mel spectrogram ``(n_mels, T)`` float32 of a JSON ``{"mel": [[...]]}`` or ``.npy`` body."""
    if isinstance(payload, np.ndarray):
        return mel_array(payload, n_mels)
    fields = json_fields(payload, ("mel",))
    if "mel" not in fields:
        raise InvalidInputError('missing key "mel"; expected {"mel": [[...], ...]} with n_mels rows')
    return mel_array(json_array(fields["mel"], "mel"), n_mels)


def codes_input(payload: Payload) -> tuple[np.ndarray, int | None, float | None]:
    """``(codes (K, T) int64, bandwidth_id, bandwidth)`` of a JSON or ``.npy`` body (npy: no bandwidth)."""
    if isinstance(payload, np.ndarray):
        return codes_array(payload), None, None
    fields = json_fields(payload, ("codes", "bandwidth_id", "bandwidth"))
    if "codes" not in fields:
        raise InvalidInputError('missing key "codes"; expected {"codes": [[...], ...]} with K rows of tokens')
    codes = codes_array(json_array(fields["codes"], "codes"))
    return codes, optional_int(fields, "bandwidth_id"), optional_float(fields, "bandwidth")


def mel_body(body: bytes, kind: str, n_mels: int) -> np.ndarray:
    """:func:`mel_input` of a body parsed here."""
    return mel_input(load_payload(body, kind), n_mels)


def codes_body(body: bytes, kind: str) -> tuple[np.ndarray, int | None, float | None]:
    """:func:`codes_input` of a body parsed here."""
    return codes_input(load_payload(body, kind))


def merge_choice(name: str, *values: float | None) -> float | None:
    """The one value given for ``name`` in the query and the body; 422 when they differ."""
    given = {v for v in values if v is not None}
    if len(given) > 1:
        raise InvalidInputError(f"{name} given twice with different values {sorted(given)}; give it once")
    return given.pop() if given else None
