"""The SEANet encoder's chunked conv stack against one whole-signal pass of the same layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vocos_core.encodec import load_encodec_encoder, seanet
from vocos_core.encodec.conv import pad1d_reflect
from vocos_core.encodec.seanet import SEANetEncoder, chunk_bounds


@pytest.fixture(scope="module")
def encoder(random_weights: Path) -> SEANetEncoder:
    return load_encodec_encoder(random_weights).encoder


def whole_signal(encoder: SEANetEncoder, audio: torch.Tensor) -> torch.Tensor:
    """Every layer once over the whole signal: what the reference computes."""
    with torch.inference_mode():
        return encoder.model(audio)


def chunked(encoder: SEANetEncoder, audio: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return encoder(audio)


def _audio(batch: int, samples: int, seed: int) -> torch.Tensor:
    return 0.3 * torch.randn(batch, 1, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("length", "chunk", "expected"), [
    (10, 32, [(0, 10)]),
    (32, 32, [(0, 32)]),
    (63, 32, [(0, 63)]),
    (64, 32, [(0, 32), (32, 64)]),
    (100, 32, [(0, 32), (32, 64), (64, 100)]),
])
def test_chunk_bounds_cover_the_input_with_a_long_last_chunk(length: int, chunk: int,
                                                             expected: list[tuple[int, int]]) -> None:
    assert chunk_bounds(length, chunk) == expected


@pytest.mark.parametrize("samples", [seanet.CHUNK_SAMPLES * 2, seanet.CHUNK_SAMPLES * 2 + 1,
                                     seanet.CHUNK_SAMPLES * 3 + 4321])
def test_chunks_of_the_production_size_are_bit_identical(encoder: SEANetEncoder, samples: int) -> None:
    # Chunks this long keep every layer wide enough for the same kernels as the whole signal.
    audio = _audio(2, samples, seed=samples)
    assert torch.equal(chunked(encoder, audio), whole_signal(encoder, audio))


@pytest.mark.parametrize("samples", [1, 6, 7, 319, 320, 3199, 3200, 6399, 6400, 6401, 9600 + 7, 16000 + 319])
def test_chunk_seams_and_ends(encoder: SEANetEncoder, samples: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks put many seams and every remainder modulo the strides into a short input; a
    # misplaced sample at a seam would show as an error of the order of the signal itself.
    monkeypatch.setattr(seanet, "CHUNK_SAMPLES", 3200)
    audio = _audio(1, samples, seed=samples)
    got, expected = chunked(encoder, audio), whole_signal(encoder, audio)
    assert got.shape == expected.shape == (1, 128, -(-samples // 320))
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_each_seam_reads_the_previous_chunk(encoder: SEANetEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the carried history a later chunk would be reflect-padded like a fresh signal, and its
    # first frames would differ; changing the first chunk must change frames after the seam.
    monkeypatch.setattr(seanet, "CHUNK_SAMPLES", 3200)
    audio = _audio(1, 9600, seed=1)
    altered = audio.clone()
    altered[..., 3000:3200] = 0.0
    first_frame_after_seam = 3200 // 320
    diff = (chunked(encoder, audio) - chunked(encoder, altered))[..., first_frame_after_seam]
    assert float(diff.abs().max()) > 1e-3


def test_reflect_pad_equals_torch_reflect() -> None:
    x = torch.randn(2, 3, 20)
    for left in range(8):
        for right in range(8):
            assert torch.equal(pad1d_reflect(x, left, right), F.pad(x, (left, right), mode="reflect"))
    assert pad1d_reflect(x, 0, 0) is x


def test_the_lstm_a_layer_and_a_chunk_at_a_time_equals_one_stacked_call(encoder: SEANetEncoder) -> None:
    slstm = next(layer for layer in encoder.model if isinstance(layer, seanet.SLSTM))
    x = torch.randn(2, 512, 250, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        whole = slstm(x)
        pieces, state = [], None
        for start in (0, 100, 230):  # chunks of 100, 130 and 20 frames
            steps = slstm.chunk_steps(x[..., start : {0: 100, 100: 230, 230: 250}[start]], state)
            units = 0
            while True:
                try:
                    next(steps)
                    units += 1
                except StopIteration as done:
                    piece, state = done.value
                    break
            assert units == slstm.lstm.num_layers == 2
            pieces.append(piece)
    assert torch.equal(torch.cat(pieces, dim=-1), whole)
