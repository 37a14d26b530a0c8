"""Behaviour of EncodecEncoder on random weights: shapes, bandwidth rule, input validation, helpers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from steps_helpers import unit_by_unit

from vocos_core.encodec import EncodecEncoder, load_encodec_encoder, seanet
from vocos_core.encodec.conv import SConv1d, extra_padding_for_conv1d, pad1d_reflect
from vocos_core.encodec.seanet import SEANetResnetBlock
from vocos_core.encodec.testing import random_encodec_state_dict
from vocos_core.errors import InputError


@pytest.fixture(scope="module")
def encoder(random_weights: Path) -> EncodecEncoder:
    return load_encodec_encoder(random_weights)


def _noise(batch: int, samples: int, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed)) * scale


def test_constants(encoder: EncodecEncoder) -> None:
    constants = (encoder.sample_rate, encoder.hop_length, encoder.frame_rate, encoder.bins)
    assert constants == (24000, 320, 75, 1024)


@pytest.mark.parametrize(("bandwidth", "n_q"), [(1.5, 2), (3.0, 4), (6, 8), (12.0, 16), (24.0, 32)])
def test_num_codebooks(encoder: EncodecEncoder, bandwidth: float, n_q: int) -> None:
    assert encoder.num_codebooks(bandwidth) == n_q


@pytest.mark.parametrize("bandwidth", [0.0, 2.0, 48.0, -6.0, float("nan"), True])
def test_unsupported_bandwidth_lists_valid_ones(encoder: EncodecEncoder, bandwidth: float) -> None:
    with pytest.raises(InputError, match=r"1\.5, 3\.0, 6\.0, 12\.0, 24\.0"):
        encoder.num_codebooks(bandwidth)
    with pytest.raises(InputError):
        encoder.encode(_noise(1, 320), bandwidth)


@pytest.mark.parametrize("samples", [1, 7, 319, 320, 321, 4000])
def test_encode_shape_and_range(encoder: EncodecEncoder, samples: int) -> None:
    codes = encoder.encode(_noise(2, samples), 6.0)
    assert codes.shape == (8, 2, math.ceil(samples / 320))
    assert codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024


def test_lower_bandwidth_codes_are_a_prefix(encoder: EncodecEncoder) -> None:
    audio = _noise(2, 6400, seed=1)
    full = encoder.encode(audio, 24.0)
    for bandwidth in (1.5, 3.0, 6.0, 12.0):
        codes = encoder.encode(audio, bandwidth)
        assert torch.equal(codes, full[: codes.shape[0]])


def test_codes_depend_on_input(encoder: EncodecEncoder) -> None:
    # The random-weights helper must give varied codes, or parity tests on it would prove little.
    codes = encoder.encode(_noise(2, 24000, seed=2), 6.0)
    for stage in range(codes.shape[0]):
        assert len(torch.unique(codes[stage])) >= 10, f"stage {stage} collapsed to few codes"
    other = encoder.encode(_noise(2, 24000, seed=3), 6.0)
    assert float((codes == other).float().mean()) < 0.5


def test_dtype_and_grad_of_input(encoder: EncodecEncoder) -> None:
    audio = _noise(1, 3200, seed=4)
    reference = encoder.encode(audio, 3.0)
    assert torch.equal(encoder.encode(audio.double(), 3.0), reference)
    codes = encoder.encode(audio.clone().requires_grad_(True), 3.0)
    assert torch.equal(codes, reference)
    assert codes.is_inference()


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (torch.zeros(320), r"\(B, S\)"),
        (torch.zeros(1, 1, 320), r"\(B, S\)"),
        (torch.zeros(2, 0), "at least one sample"),
        (torch.zeros(0, 320), "at least one sample"),
        (torch.zeros(1, 320, dtype=torch.int16), "floating-point"),
        (torch.tensor([[0.0, float("nan")]]), "NaN or Inf"),
        (torch.tensor([[0.0, float("inf")]]), "NaN or Inf"),
        ([[0.0] * 320], "torch.Tensor"),
    ],
)
def test_bad_audio(encoder: EncodecEncoder, audio: torch.Tensor, message: str) -> None:
    with pytest.raises(InputError, match=message):
        encoder.encode(audio, 6.0)


def test_codebook(encoder: EncodecEncoder, random_weights: Path) -> None:
    state = torch.load(random_weights, weights_only=True)
    book = encoder.codebook(4)
    assert book.shape == (4 * 1024, 128)
    assert torch.equal(book[2048:3072], state["quantizer.vq.layers.2._codebook.embed"])
    for bad in (0, 33, 2.0):
        with pytest.raises(InputError, match=r"1\.\.32"):
            encoder.codebook(bad)  # type: ignore[arg-type]


def test_random_helper_is_seeded_and_complete(random_weights: Path) -> None:
    written = torch.load(random_weights, weights_only=True)
    again = random_encodec_state_dict(seed=0)
    assert written.keys() == again.keys() == EncodecEncoder().state_dict().keys()
    assert all(torch.equal(written[k], again[k]) for k in written)
    other = random_encodec_state_dict(seed=1)
    key = "quantizer.vq.layers.0._codebook.embed"
    assert not torch.equal(other[key], again[key])
    with_decoder = random_encodec_state_dict(seed=0, include_decoder=True)
    assert any(k.startswith("decoder.") for k in with_decoder)


def test_loaded_weights_equal_file(encoder: EncodecEncoder, random_weights: Path) -> None:
    written = torch.load(random_weights, weights_only=True)
    loaded = encoder.state_dict()
    assert loaded.keys() == written.keys()
    assert all(torch.equal(loaded[k], written[k]) for k in written)


def test_the_loaded_encoder_is_frozen_so_grad_mode_records_no_graph(encoder: EncodecEncoder) -> None:
    # Called outside inference mode, its chunks would otherwise chain one autograd graph through the
    # LSTM's carried state: gigabytes for a minute of audio, for codes no gradient flows through.
    assert not any(p.requires_grad for p in encoder.parameters())
    latents = encoder.encoder(_noise(1, 3200).unsqueeze(1))
    assert latents.grad_fn is None and not latents.requires_grad


@pytest.mark.parametrize(("length", "kernel", "stride"), [(1, 4, 2), (5, 16, 8), (320, 10, 5), (321, 8, 4)])
def test_extra_padding_matches_float_formula(length: int, kernel: int, stride: int) -> None:
    padding_total = kernel - stride
    n_frames = (length - kernel + padding_total) / stride + 1
    float_version = (math.ceil(n_frames) - 1) * stride + (kernel - padding_total) - length
    assert extra_padding_for_conv1d(length, kernel, stride, padding_total) == float_version


def test_reflect_pad_of_input_shorter_than_pad() -> None:
    x = torch.tensor([[[1.0, 2.0]]])
    # zero-extended to [1, 2, 0, 0] before reflecting, then the extension is cut: left pad reflects 2, 0, 0
    assert pad1d_reflect(x, 3, 0).tolist() == [[[0.0, 0.0, 2.0, 1.0, 2.0]]]
    assert pad1d_reflect(x, 1, 1).tolist() == [[[2.0, 1.0, 2.0, 1.0]]]


def test_encoding_unit_by_unit_equals_one_whole_pass(encoder: EncodecEncoder) -> None:
    # Six chunks of the encoder (the last one longer) in two spans of its LSTM and last convolution
    # (four chunks, then two), their state and context carried across; the quantizer a span's frames
    # at a time.
    audio = _noise(2, 6 * seanet.CHUNK_SAMPLES + 4321, seed=7)
    calls, pieces = unit_by_unit(encoder.encode_steps(audio, 24.0))
    codes = torch.cat(pieces, dim=-1)
    with torch.inference_mode():
        x = audio.unsqueeze(1)  # (B, S) -> (B, 1, S)
        whole = encoder.quantizer.encode(encoder.encoder.model(x), encoder.frame_rate, 24.0)
    assert torch.equal(codes, whole)
    assert [piece.shape[-1] for piece in pieces] == [400, 214]  # a piece per span, as it is done
    # Many short units: each convolution or residual block of each chunk (9 of the stack's 13 layers),
    # and each LSTM layer and the last convolution of each span.
    stack = list(encoder.encoder.model)[:-3]
    units_per_chunk = sum(isinstance(layer, (SConv1d, SEANetResnetBlock)) for layer in stack)
    assert units_per_chunk == 9 and calls == 6 * units_per_chunk + 2 * 3 + 1  # + the call that finds the end


def test_encode_steps_checks_its_arguments_before_any_unit_runs(encoder: EncodecEncoder) -> None:
    with pytest.raises(InputError, match="bandwidth"):
        encoder.encode_steps(_noise(1, 3200), 5.0)
    with pytest.raises(InputError, match="NaN"):
        encoder.encode_steps(torch.full((1, 3200), float("nan")), 6.0)
