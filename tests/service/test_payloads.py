"""Parsing and validating decode bodies: .npy, JSON, mel spectrograms, token grids, bandwidths."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest

from service.errors import InvalidInputError, MalformedPayloadError, UnsupportedMediaTypeError
from service.http.payloads import body_kind, codes_grid, load_payload, mel_grid, merge_choice, parse_npy
from service.testing import npy_bytes
from vocos_core.errors import InputError
from vocos_core.requests import codes_array, mel_array, resolve_bandwidth_id


def mel_body(body: bytes, kind: str, n_mels: int) -> np.ndarray:
    """A body as the service takes it: parsed here, its meaning checked by vocos_core."""
    return mel_array(mel_grid(load_payload(body, kind)), n_mels)


def codes_body(body: bytes, kind: str) -> tuple[np.ndarray, int | None, float | None]:
    codes, bandwidth_id, bandwidth = codes_grid(load_payload(body, kind))
    return codes_array(codes), bandwidth_id, bandwidth

BANDWIDTHS = (1.5, 3.0, 6.0, 12.0)
CODEBOOKS = (2, 4, 8, 16)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.arange(6, dtype=">f4").reshape(2, 3),
        np.arange(6, dtype=np.int16).reshape(2, 3),
    ],
)
def test_npy_round_trip(array: np.ndarray) -> None:
    parsed = parse_npy(npy_bytes(array))
    np.testing.assert_array_equal(parsed, array)
    assert parsed.dtype.isnative and parsed.flags.writeable


def test_npy_headers_are_read_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy reads a header with ast.literal_eval, whose recursion depth CPython 3.11 keeps for all threads: two
    bodies parsed at once (a stream's on the event loop, a request's in a worker thread) failed one as a 400
    "AST constructor recursion depth mismatch" (seen in the drain test under load)."""
    real, inside, overlaps = np.lib.format.read_array_header_1_0, [0], []

    def watched(stream: io.BytesIO) -> object:
        inside[0] += 1
        overlaps.append(inside[0] > 1)
        time.sleep(0.002)  # long enough for another thread to come in, were it let
        inside[0] -= 1
        return real(stream)

    monkeypatch.setattr(np.lib.format, "read_array_header_1_0", watched)
    body = npy_bytes(np.zeros((100, 4), np.float32))
    threads = [threading.Thread(target=lambda: [parse_npy(body) for _ in range(5)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(overlaps) == 20 and not any(overlaps)


def test_npy_refuses_what_is_not_npy() -> None:
    with pytest.raises(MalformedPayloadError, match=r"not a \.npy file"):
        parse_npy(b"PK\x03\x04 a zip, maybe an .npz")
    with pytest.raises(MalformedPayloadError, match="header"):
        parse_npy(b"\x93NUMPY\x01\x00\x10\x00{'descr': garbage")


def test_a_json_style_npy_header_is_told_what_the_header_is() -> None:
    """A writer of another language that puts JSON in the header (false, a list) got numpy's parser's words
    alone ("malformed node or string ... <ast.Name object>")."""
    header = b"{'descr': '<f4', 'fortran_order': false, 'shape': [100, 20], }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    body = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(8000)
    with pytest.raises(MalformedPayloadError, match=r"a Python dict literal as np\.save writes it.*not JSON's false"):
        parse_npy(body)


def test_npy_truncated_or_lying_about_its_shape() -> None:
    body = npy_bytes(np.zeros((100, 50), np.float32))
    with pytest.raises(MalformedPayloadError, match=r"declares shape \(100, 50\).*20000 bytes.*but 19990 follow"):
        parse_npy(body[:-10])
    # A tiny body claiming a huge array is refused before anything is allocated.
    fake = io.BytesIO()
    np.lib.format.write_array_header_1_0(fake, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    with pytest.raises(MalformedPayloadError, match="declares shape"):
        parse_npy(fake.getvalue() + b"\x00" * 16)


def test_npy_refuses_pickled_objects_without_unpickling() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match=r"dtype object.*plain numeric array"):
        parse_npy(buffer.getvalue())


def test_body_kind_from_content_type_or_sniffed() -> None:
    assert body_kind("application/json; charset=utf-8", b"{}") == "json"
    assert body_kind("application/x-npy", b"") == "npy"
    assert body_kind("application/octet-stream", b"") == "npy"
    assert body_kind(None, npy_bytes(np.zeros(2))) == "npy"
    assert body_kind("", b' {"mel": []}') == "json"
    with pytest.raises(UnsupportedMediaTypeError, match="expected application/json or application/x-npy"):
        body_kind("text/csv", b"1,2,3")


def test_mel_json_and_npy_agree() -> None:
    mel = np.random.default_rng(0).standard_normal((100, 7)).astype(np.float32)
    from_json = mel_body(json.dumps({"mel": mel.tolist()}).encode(), "json", 100)
    from_npy = mel_body(npy_bytes(mel), "npy", 100)
    np.testing.assert_array_equal(from_json, mel)
    np.testing.assert_array_equal(from_npy, mel)
    assert from_json.dtype == np.float32
    np.testing.assert_array_equal(mel_body(npy_bytes(mel[None]), "npy", 100), mel)  # (1, n_mels, T)


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (b'{"mel": [[1, 2], [3', MalformedPayloadError, "malformed JSON"),
        (b"\xff\xfe", MalformedPayloadError, "malformed JSON"),
        (b"[[1.0]]", InvalidInputError, "expected a JSON object"),
        (b'{"spec": [[1.0]]}', InvalidInputError, r"unknown JSON keys \['spec'\]"),
        (b"{}", InvalidInputError, 'missing key "mel"'),
        (b'{"mel": "AAAA"}', InvalidInputError, "nested list of numbers"),
        (b'{"mel": [[1.0, 2.0], [3.0]]}', InvalidInputError, "rectangular"),
        (b'{"mel": [["a", "b"]]}', InvalidInputError, "only numbers"),
        (b'{"mel": [[true, false]]}', InvalidInputError, r"only numbers \(got boolean values"),
        (b'{"mel": [[1.0, null]]}', InvalidInputError, r"only numbers \(got null values"),
        (b'{"mel": [[1.0], [{"a": 1}]]}', InvalidInputError, r"only numbers \(got object values"),
    ],
)
def test_mel_json_errors(body: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        mel_body(body, "json", 100)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((100,), np.float32), r"2-D mel spectrogram of shape \(100, T\); got shape \(100,\)"),
        (np.zeros((2, 100, 5), np.float32), r"got shape \(2, 100, 5\)"),
        (np.zeros((80, 5), np.float32), "expected 100 mel bands .rows., got 80"),
        (np.zeros((5, 100), np.float32), "looks transposed"),
        (np.zeros((100, 0), np.float32), "no frames"),
        (np.zeros((100, 5), np.int32), "expected float32 mel values.*got int32"),
        (np.zeros((100, 5), np.complex64), "got complex"),
        (np.zeros((100, 5), bool), "got boolean"),
    ],
)
def test_mel_shape_and_dtype_errors(array: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        mel_array(array, 100)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_mel_non_finite_values(bad: float) -> None:
    mel = np.zeros((100, 5), np.float32)
    mel[3, 4] = bad
    with pytest.raises(InputError, match=r"1 NaN or Inf value\(s\), first at index \(3, 4\)"):
        mel_array(mel, 100)
    with pytest.raises(InputError, match="NaN or Inf"):
        mel_body(npy_bytes(mel), "npy", 100)
    with pytest.raises(MalformedPayloadError, match="malformed JSON"):  # JSON has no NaN or Infinity
        mel_body(b'{"mel": [[NaN], [1.0]]}', "json", 2)


def test_finite_values_beyond_float32_are_named_as_such_not_as_nan_or_inf() -> None:
    mel = np.zeros((100, 5), np.float64)
    mel[2, 3] = -1e300
    with pytest.raises(InputError, match=r"beyond float32's range \(±3.4e38\), first at index \(2, 3\): -1e\+300"):
        mel_array(mel, 100)
    body = '{"mel": [' + ", ".join(["[0.0, 1e39]"] * 100) + "]}"  # JSON numbers parse as float64
    with pytest.raises(InputError, match=r"beyond float32's range .*first at index \(0, 1\): 1e\+39"):
        mel_body(body.encode(), "json", 100)


def test_float16_and_float64_mels_are_converted() -> None:
    for dtype in (np.float16, np.float64):
        assert mel_array(np.ones((4, 3), dtype), 4).dtype == np.float32


def test_codes_validation() -> None:
    grid = np.random.default_rng(0).integers(0, 1024, (8, 20))
    np.testing.assert_array_equal(codes_array(grid.astype(np.uint16)), grid)
    np.testing.assert_array_equal(codes_array(grid[:, None, :]), grid)  # (K, 1, T)
    with pytest.raises(InputError, match=r"codes must lie in \[0, 1024\); found 1024"):
        codes_array(np.full((2, 3), 1024))
    with pytest.raises(InputError, match="found -1"):
        codes_array(np.array([[0, -1], [2, 3]]))
    with pytest.raises(InputError, match="expected integer codes, got float32"):
        codes_array(np.zeros((2, 3), np.float32))
    with pytest.raises(InputError, match=r"2-D token grid of shape \(K codebooks, T\)"):
        codes_array(np.zeros((2, 3, 4), np.int64))
    with pytest.raises(InputError, match="empty"):
        codes_array(np.zeros((2, 0), np.int64))


def test_codes_as_encodec_encode_returns_them_and_floats_named_by_value() -> None:
    grid = np.random.default_rng(0).integers(0, 1024, (8, 20))
    np.testing.assert_array_equal(codes_array(grid[None]), grid)  # (1, K, T): EnCodec's encode
    with pytest.raises(InputError, match=r"or one item as \(K, 1, T\) or \(1, K, T\); got shape \(2, 8, 20\)"):
        codes_array(np.stack([grid, grid]))
    with pytest.raises(InputError, match=r"got float64 values such as 0.5 at index \(1, 2\); codes are whole"):
        codes_array(np.where(np.arange(6).reshape(2, 3) == 5, 0.5, 1.0))
    with pytest.raises(InputError, match=r"whole numbers: send them as an integer dtype"):
        codes_array(grid.astype(np.float32))
    with pytest.raises(InputError, match="found 100000000000000000000"):  # not the dtype: no dtype makes it a code
        codes_array(np.full((2, 3), 1e20))


def test_json_codes_written_as_whole_floats_are_codes() -> None:
    codes, _, _ = codes_body(b'{"codes": [[1.0, 2], [3, 1023.0]]}', "json")
    assert codes.dtype == np.int64 and codes.tolist() == [[1, 2], [3, 1023]]
    with pytest.raises(InputError, match=r"got float64 values such as 2.5 at index \(0, 1\)"):
        codes_body(b'{"codes": [[1, 2.5], [3, 4]]}', "json")
    with pytest.raises(InputError, match=r"found 1180591620717411303424"):  # an integer past int64, not "float64"
        codes_body(b'{"codes": [[1, 1180591620717411303424], [3, 4]]}', "json")


def test_codes_body_json_fields() -> None:
    codes, bw_id, kbps = codes_body(b'{"codes": [[1, 2], [3, 4]], "bandwidth": 1.5}', "json")
    assert codes.tolist() == [[1, 2], [3, 4]] and bw_id is None and kbps == 1.5
    with pytest.raises(InvalidInputError, match="'bandwidth_id' must be an integer"):
        codes_body(b'{"codes": [[1]], "bandwidth_id": "two"}', "json")
    with pytest.raises(InvalidInputError, match="'bandwidth' must be a number"):
        codes_body(b'{"codes": [[1]], "bandwidth": true}', "json")
    with pytest.raises(InvalidInputError, match='missing key "codes"'):
        codes_body(b'{"bandwidth": 6}', "json")


def resolve(**kwargs: float | int | None) -> int:
    return resolve_bandwidth_id(BANDWIDTHS, CODEBOOKS, **kwargs)  # type: ignore[arg-type]


def test_bandwidth_resolution() -> None:
    assert [resolve(num_codebooks=k) for k in CODEBOOKS] == [0, 1, 2, 3]
    assert resolve(bandwidth=6, num_codebooks=8) == 2
    assert resolve(bandwidth_id=3, num_codebooks=16) == 3
    assert resolve(bandwidth=12.0, bandwidth_id=3) == 3
    assert resolve(bandwidth=1.5) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bandwidth_id": 4}, r"unknown bandwidth_id 4; expected one of 0=1.5 kbps \(2 codebooks\), 1=3 kbps"),
        ({"bandwidth_id": -1}, "unknown bandwidth_id -1"),
        ({"bandwidth": 24.0}, "unknown bandwidth 24 kbps; expected one of"),
        ({"bandwidth_id": 1, "bandwidth": 6.0}, "disagree"),
        ({"num_codebooks": 5}, r"cannot infer the bandwidth from 5 codebooks; expected K in \[2, 4, 8, 16\]"),
        ({"bandwidth": 6.0, "num_codebooks": 4}, r"6 kbps \(id 2\) expects 8 codebooks, got K=4"),
        ({}, "a bandwidth is required"),
    ],
)
def test_bandwidth_errors_list_the_choices(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve(**kwargs)


@pytest.mark.parametrize("kwargs", [{"num_codebooks": 50, "frames": 8},
                                    {"bandwidth": 6.0, "num_codebooks": 50, "frames": 8}])
def test_a_transposed_grid_is_named_as_such(kwargs: dict[str, float]) -> None:
    with pytest.raises(InputError, match=r"it looks transposed: send the codebooks as rows, shape \(K, T\)"):
        resolve(**kwargs)
    with pytest.raises(InputError) as caught:  # a K that fits no bandwidth, T neither: no hint
        resolve(**{**kwargs, "frames": 50})
    assert "transposed" not in str(caught.value)


def test_merge_choice() -> None:
    assert merge_choice("bandwidth", None, 6.0) == 6.0
    assert merge_choice("bandwidth", 6.0, 6.0) == 6.0
    assert merge_choice("bandwidth", None, None) is None
    with pytest.raises(InvalidInputError, match="given twice"):
        merge_choice("bandwidth", 3.0, 6.0)


def test_strings_in_a_json_mel_are_refused_before_numpy_sizes_an_array_by_the_longest() -> None:
    """One string of 8000 characters and 4000 empty ones: numpy's fixed-width string array would be 128 MB
    (a 64 KB body of the kind took 1.3 GB on the event loop)."""
    import tracemalloc

    body = json.dumps({"mel": ["a" * 8000] + [""] * 4000}).encode()
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError, match=r"only numbers \(got string values"):
            mel_body(body, "json", 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"null", r"got null$"),
        (b"[[1.0]]", r"got an array$"),
        (b'"mel"', r"got a string$"),
        (b"3", r"got a number$"),
        (b'{"mel": {"a": 1}}', r"'mel' must be a nested list of numbers, got an object$"),
        (b'{"mel": 5}', r"'mel' must be a nested list of numbers, got a number$"),
        (b'{"mel": null}', r"'mel' must be a nested list of numbers, got null$"),
    ],
)
def test_json_errors_name_json_types_not_python_ones(body: bytes, message: str) -> None:
    """A Go or JavaScript client sent null, an object, a number: the message said NoneType, dict, int."""
    with pytest.raises(InvalidInputError, match=message):
        mel_body(body, "json", 100)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (b'"bandwidth_id": true', "'bandwidth_id' must be an integer, got true$"),
        (b'"bandwidth_id": "2"', "'bandwidth_id' must be an integer, got \"2\"$"),
        (b'"bandwidth_id": [2]', "'bandwidth_id' must be an integer, got an array$"),
        (b'"bandwidth_id": 1.5', "'bandwidth_id' must be an integer, got 1.5$"),
        (b'"bandwidth": false', "'bandwidth' must be a number, got false$"),
        (b'"bandwidth": {"kbps": 6}', "'bandwidth' must be a number, got {\"kbps\": 6}$"),
        (b'"bandwidth": "' + b"6" * 100 + b'"', r"got \"6{39}… \(102 characters\)$"),
    ],
)
def test_bandwidth_fields_of_the_wrong_type_are_quoted_as_json(field: bytes, message: str) -> None:
    """The value is quoted as the client wrote it (true, "2"), not as Python's repr (True, '2')."""
    with pytest.raises(InvalidInputError, match=message):
        codes_body(b'{"codes": [[1, 2], [3, 4]], ' + field + b"}", "json")


def test_a_whole_float_bandwidth_id_is_that_id() -> None:
    """JSON has one kind of number: Python's json writes a float 2 as 2.0, which ?bandwidth_id=2.0 takes as 2,
    and which codes take as the code 2; the body's bandwidth_id refused it."""
    _, bandwidth_id, _ = codes_body(b'{"codes": [[1, 2], [3, 4]], "bandwidth_id": 0.0}', "json")
    assert bandwidth_id == 0 and type(bandwidth_id) is int
    # A whole float past 2**53 means no integer: refused as one, not made a 309-digit id echoed in the error.
    with pytest.raises(InvalidInputError, match=r"'bandwidth_id' must be an integer, got 1e\+308"):
        codes_body(b'{"codes": [[1, 2], [3, 4]], "bandwidth_id": 1e308}', "json")
