"""The frame messages as a client without numpy writes them (docs/streaming.md, "Writing the messages without
numpy"): the .npy layout the docs give, the array variants they say are taken, and the docs' own JavaScript."""

from __future__ import annotations

import base64
import io
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stream_helpers import collect, error_of

from service.runtime.models import ServedModel
from service.testing import npy_bytes as npy

DOCS = Path(__file__).resolve().parents[2] / "docs" / "streaming.md"


def npy_by_hand(values: np.ndarray, descr: str, *, padded: bool) -> bytes:
    """A (rows, cols) array as the docs tell a client in another language to write it: magic, version 1.0,
    the header's length (uint16 LE), a dict literal, the row-major values; padded as np.save pads, or not."""
    rows, cols = values.shape
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}"
    if padded:
        header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    raw = header.encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + np.ascontiguousarray(values).tobytes()


def _audio(client: Any, path: str, messages: list[bytes]) -> np.ndarray:
    with client.websocket_connect(path) as ws:
        ws.receive_text()  # start
        for message in messages:
            ws.send_bytes(message)
        ws.send_text('{"type": "end"}')
        audio, done = collect(ws, "<f4")
    assert done == {"type": "done", "samples": audio.size}
    return audio


@pytest.mark.parametrize("padded", [True, False])
def test_messages_written_by_hand_as_the_docs_say_give_the_audio_of_np_save(
    client_for: Any, models: dict[str, ServedModel], padded: bool
) -> None:
    client = client_for()
    mel = np.random.default_rng(0).standard_normal((models["mel"].n_features, 30)).astype("<f4")
    halves = [mel[:, :13], mel[:, 13:]]
    by_hand = _audio(client, "/stream/mel?format=f32", [npy_by_hand(m, "<f4", padded=padded) for m in halves])
    np.testing.assert_array_equal(by_hand, _audio(client, "/stream/mel?format=f32", [npy(m) for m in halves]))
    codes = np.random.default_rng(1).integers(0, 1024, (8, 20)).astype("<i4")
    by_hand = _audio(client, "/stream/encodec?format=f32", [npy_by_hand(codes, "<i4", padded=padded)])
    np.testing.assert_array_equal(by_hand, _audio(client, "/stream/encodec?format=f32", [npy(codes)]))


def test_the_array_variants_the_docs_list_give_the_audio_of_float32_rows(
    client_for: Any, models: dict[str, ServedModel]
) -> None:
    client = client_for()
    # Values float16 holds exactly, so every variant carries the same numbers.
    mel = np.random.default_rng(2).standard_normal((models["mel"].n_features, 24)).astype(np.float16)
    expected = _audio(client, "/stream/mel?format=f32", [npy(mel.astype(np.float32))])
    for variant in (
        mel,
        mel.astype(np.float64),
        mel.astype(">f4"),
        np.asfortranarray(mel.astype(np.float32)),
        mel.astype(np.float32)[None],
    ):
        got = _audio(client, "/stream/mel?format=f32", [npy(variant)])
        np.testing.assert_array_equal(got, expected, err_msg=f"{variant.dtype} {variant.shape}")
    codes = np.random.default_rng(3).integers(0, 1024, (8, 20))
    expected = _audio(client, "/stream/encodec?format=f32", [npy(codes)])
    for grid in (
        codes.astype(">i4"),
        codes.astype(np.int16),
        codes.astype(np.uint16),
        np.asfortranarray(codes),
        codes[None],
    ):
        np.testing.assert_array_equal(
            _audio(client, "/stream/encodec?format=f32", [npy(grid)]), expected, err_msg=f"{grid.dtype} {grid.shape}"
        )


def test_an_empty_frame_message_ends_the_stream_with_422_after_the_audio_before_it(
    client_for: Any, models: dict[str, ServedModel]
) -> None:
    mel = np.random.default_rng(4).standard_normal((models["mel"].n_features, 40)).astype(np.float32)
    with client_for().websocket_connect("/stream/mel?format=f32") as ws:
        ws.receive_text()
        ws.send_bytes(npy(mel))
        ws.send_bytes(npy(mel[:, :0]))
        audio = np.frombuffer(ws.receive_bytes(), "<f4")  # the first chunk's final audio still goes out
        error, code = error_of(ws)
    assert audio.size == 40 * models["mel"].model.hop_length - models["mel"].lookahead.samples  # what 40 frames let out
    assert (error["status"], error["error"], code) == (422, "invalid_input", 4422)
    assert "no frames" in error["message"]


def _docs_js_function() -> str:
    block = re.search(r"### Writing the messages without numpy.*?```js\n(.*?)```", DOCS.read_text(), re.S)
    assert block, "docs/streaming.md lost its JavaScript example"
    function = re.search(r"^function npy\(.*?^}\n", block.group(1), re.S | re.M)
    assert function, "the docs' example has no function npy"
    return function.group(0)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_the_docs_javascript_npy_writer_makes_what_numpy_reads(client_for: Any, models: dict[str, ServedModel]) -> None:
    """The docs' function, run in Node: its bytes are the same array to numpy, and a stream takes them."""
    n_mels = models["mel"].n_features
    script = _docs_js_function() + (
        f"const mel = new Float32Array({n_mels} * 3);\n"
        "for (let i = 0; i < mel.length; i++) mel[i] = Math.sin(i * 0.37);\n"
        "const codes = new Int32Array([1, 2, 3, 1000, 5, 6]);\n"
        f"console.log(Buffer.from(npy(mel, {n_mels}, 3)).toString('base64'));\n"
        "console.log(Buffer.from(npy(codes, 2, 3, '<i4')).toString('base64'));\n"
    )
    run = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60, check=True)
    mel_bytes, codes_bytes = (base64.b64decode(line) for line in run.stdout.split())
    mel = np.load(io.BytesIO(mel_bytes), allow_pickle=False)
    np.testing.assert_array_equal(mel, np.sin(np.arange(n_mels * 3) * 0.37).astype(np.float32).reshape(n_mels, 3))
    codes = np.load(io.BytesIO(codes_bytes), allow_pickle=False)
    np.testing.assert_array_equal(codes, np.array([[1, 2, 3], [1000, 5, 6]], dtype=np.int32))
    client = client_for()
    np.testing.assert_array_equal(
        _audio(client, "/stream/mel?format=f32", [mel_bytes]), _audio(client, "/stream/mel?format=f32", [npy(mel)])
    )
