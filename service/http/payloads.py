"""Request bodies of the decode endpoints: JSON or ``.npy``, parsed and validated into arrays.

``.npy`` is parsed by our own header check plus ``np.frombuffer`` rather than ``np.load``: the header's
shape is checked against the body length before anything is allocated, so a 100-byte body cannot
claim a terabyte array, and pickled (object) arrays are refused without being touched.
"""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.echo import clip
from service.errors import InvalidInputError, MalformedPayloadError, UnsupportedMediaTypeError, without_addresses
from service.http import json_body

JSON_TYPES = frozenset({"application/json"})
NPY_TYPES = frozenset({"application/x-npy", "application/npy", "application/octet-stream"})
NPY_MAGIC = b"\x93NUMPY"
NPY_MAX_DIMS = 32  # numpy's own limit is 64; no input of ours has more than 3
_SHOWN_CHARS = 40  # of a JSON value quoted in a message


def media_type(content_type: str | None) -> str:
    """``"application/json; charset=utf-8"`` -> ``"application/json"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """Whether ``content_type`` is JSON (``application/json`` or a ``+json`` type)."""
    kind = media_type(content_type)
    return kind in JSON_TYPES or kind.endswith("+json")


def body_kind(content_type: str | None, body: bytes) -> str:
    """``"json"`` or ``"npy"``, from the Content-Type (sniffed from the body when there is none)."""
    if is_json(content_type):
        return "json"
    kind = media_type(content_type)
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
    its parser process, ``service.http.json_parser``, which returns the same)."""
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
        kind = payload if isinstance(payload, str) else json_body.json_type(payload)
        raise InvalidInputError(f"expected a JSON object with keys {list(allowed_keys)}, got {_a(kind)}")
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
        raise InvalidInputError(f"'{name}' must be a nested list of numbers, got {_a(json_body.json_type(value))}")
    return value


# numpy reads a .npy header with ast.literal_eval, whose C code keeps its recursion depth in state shared by
# every thread on CPython 3.11: two headers read at once (the event loop's stream and a request's worker thread)
# failed one of them with "AST constructor recursion depth mismatch", a valid body answered 400.
_HEADER_LOCK = threading.Lock()


def parse_npy(body: bytes) -> np.ndarray:
    """The array of a ``.npy`` body; 400 when it is not a well-formed, complete ``.npy`` file."""
    if not body.startswith(NPY_MAGIC):
        raise MalformedPayloadError("body is not a .npy file (it does not start with the \\x93NUMPY magic)")
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise MalformedPayloadError(f"unsupported .npy format version {version}; expected 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        with _HEADER_LOCK:
            shape, fortran, dtype = read_header(stream)
    except MalformedPayloadError:
        raise
    except Exception as exc:  # numpy raises ValueError/SyntaxError/EOFError on broken headers
        # A hand-written header (another language's writer) most often has JSON's false and lists: say what it is.
        raise MalformedPayloadError(
            f"malformed .npy header: {without_addresses(str(exc))}; the header is a Python dict literal as np.save "
            "writes it, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (100, 20), } (False and a tuple, "
            "not JSON's false and a list)") from None
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
            f"but {len(data)} follow the header"
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


def optional_int(fields: Mapping[str, Any], key: str) -> int | None:
    """An integer field; a whole float (``2.0``, as Python's json writes a float) is that integer, as JSON
    has one kind of number and the query's ``?bandwidth_id=2.0`` is taken as 2 too."""
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:  # beyond: no integer JSON meant
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"'{key}' must be an integer, got {_json_text(value)}")
    return value


def optional_float(fields: Mapping[str, Any], key: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"'{key}' must be a number, got {_json_text(value)}")
    return float(value)


def _a(kind: str) -> str:
    """A JSON type named in a sentence: ``"an array"``, ``"a string"``, ``"null"``."""
    if kind == "null":
        return kind
    return f"{'an' if kind[:1] in ('a', 'o') else 'a'} {kind}"


def _json_text(value: object) -> str:
    """A field's value as the client wrote it, in JSON (``true``, ``"2"``), clipped; a nested list by its type."""
    if isinstance(value, np.ndarray):
        return "an array"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}… ({len(text)} characters)"


def mel_grid(payload: Payload) -> np.ndarray:
    """The mel array of a JSON ``{"mel": [[...]]}`` or ``.npy`` body, as sent (its meaning is checked by
    ``vocos_core.requests.mel_array`` against the model)."""
    if isinstance(payload, np.ndarray):
        return payload
    fields = json_fields(payload, ("mel",))
    if "mel" not in fields:
        raise InvalidInputError('missing key "mel"; expected {"mel": [[...], ...]} with n_mels rows')
    mel = json_array(fields["mel"], "mel")
    # JSON has one kind of number: 0 and 0.0 are the same value (JavaScript writes 0.0 as 0), so whole
    # numbers are mel values too. A .npy body's integer dtype is a real mistake, refused by mel_array.
    return mel.astype(np.float64) if mel.dtype.kind in "iu" else mel


def codes_grid(payload: Payload) -> tuple[np.ndarray, int | None, float | None]:
    """``(codes (K, T), bandwidth_id, bandwidth)`` of a JSON or ``.npy`` body (npy: no bandwidth), as
    sent (checked by ``vocos_core.requests``)."""
    if isinstance(payload, np.ndarray):
        return payload, None, None
    fields = json_fields(payload, ("codes", "bandwidth_id", "bandwidth"))
    if "codes" not in fields:
        raise InvalidInputError('missing key "codes"; expected {"codes": [[...], ...]} with K rows of tokens')
    codes = json_array(fields["codes"], "codes")
    # JSON has one kind of number: 5.0 is the code 5 (Python's json writes a float tensor's codes so, and one
    # 5.0 makes numpy read a whole grid as floats). Other floats go on as floats, which vocos_core refuses by value.
    if codes.dtype.kind == "f" and bool(np.all((np.abs(codes) < 2.0**63) & (codes == np.trunc(codes)))):
        codes = codes.astype(np.int64)
    return codes, optional_int(fields, "bandwidth_id"), optional_float(fields, "bandwidth")


def merge_choice(name: str, *values: float | None) -> float | None:
    """The one value given for ``name`` in the query and the body; 422 when they differ."""
    given = {v for v in values if v is not None}
    if len(given) > 1:
        raise InvalidInputError(f"{name} given twice with different values {sorted(given)}; give it once")
    return given.pop() if given else None
