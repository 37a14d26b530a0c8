"""Streaming decode equals the offline decode, for every chunking, head, backbone and input kind."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vocos_core import Vocos
from vocos_core.errors import InputError
from vocos_core.streaming import StreamState, decode_steps
from vocos_core.testing import checkpoint_config, random_model

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
TOLERANCE = 1e-5


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"{tuple(actual.shape)} != {tuple(expected.shape)}"
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def chunk_sizes(total: int, how: str, seed: int = 0) -> list[int]:
    """Chunk sizes summing to ``total``: one frame at a time, or random sizes of 1..12."""
    if how == "single":
        return [1] * total
    rng, sizes = random.Random(seed), []
    while sum(sizes) < total:
        sizes.append(min(rng.randint(1, 12), total - sum(sizes)))
    return sizes


def stream_features(model: Vocos, x: torch.Tensor, sizes: list[int], bandwidth_id: int | None = None) -> torch.Tensor:
    stream, pieces, t = model.stream(bandwidth_id), [], 0
    for n in sizes:
        pieces.append(stream.push(x[:, t:t + n]))
        t += n
    pieces.append(stream.flush())
    return torch.cat(pieces)


@pytest.mark.parametrize("how", ["single", "random"])
@pytest.mark.parametrize("head", ["istft", "imdct_symexp", "imdct_cos"])
@pytest.mark.parametrize("padding", ["center", "same"])
@pytest.mark.parametrize("backbone", ["convnext", "resnet"])
def test_mel_stream_equals_offline(backbone: str, padding: str, head: str, how: str) -> None:
    model = random_model(checkpoint_config("mel", num_layers=2, padding=padding, backbone=backbone, head=head))
    x = torch.randn(model.n_features, 47)
    expected = model.decode(x[None])[0]
    assert relative_error(stream_features(model, x, chunk_sizes(47, how)), expected) <= TOLERANCE


@pytest.mark.parametrize("backbone", ["convnext", "resnet"])
@pytest.mark.parametrize("bandwidth_id", [0, 3])
def test_encodec_stream_equals_offline(backbone: str, bandwidth_id: int) -> None:
    model = random_model(checkpoint_config("encodec", num_layers=2, backbone=backbone))
    k = model.num_codebooks(bandwidth_id)
    codes = torch.randint(0, 1024, (k, 41))
    expected = model.decode_codes(codes, bandwidth_id=bandwidth_id)[0]
    stream, pieces, t = model.stream(), [], 0  # the bandwidth follows from the first codes' K
    for n in chunk_sizes(41, "random", seed=bandwidth_id):
        pieces.append(stream.push_codes(codes[:, t:t + n]))
        t += n
    pieces.append(stream.flush())
    assert relative_error(torch.cat(pieces), expected) <= TOLERANCE


def test_an_encodec_model_without_adalayernorm_streams_its_features_without_a_bandwidth() -> None:
    model = random_model(checkpoint_config("encodec", num_layers=2, backbone="resnet"))  # decode takes no id
    x = model.codes_to_features(torch.randint(0, 1024, (8, 33)))[0]  # (128, 33) features
    expected = model.decode(x[None])[0]
    assert relative_error(stream_features(model, x, chunk_sizes(33, "random")), expected) <= TOLERANCE


def test_hifigan_mel_stream_equals_offline() -> None:
    model = random_model(checkpoint_config("hifigan-mel", num_layers=2))
    x = torch.randn(model.n_features, 30)
    expected = model.decode(x[None])[0]
    assert relative_error(stream_features(model, x, chunk_sizes(30, "random")), expected) <= TOLERANCE


@pytest.mark.parametrize("name", ["vocos-mel-tiny", "vocos-mel-tiny-same", "vocos-encodec-tiny"])
def test_reference_checkpoints_stream_exactly(name: str) -> None:
    if not (REFERENCE / name).is_dir():
        pytest.skip(f"{REFERENCE / name} is not on this machine")
    model = Vocos.from_pretrained(REFERENCE / name)
    x = torch.randn(model.n_features, 64)
    bandwidth_id = 1 if model.kind == "encodec" else None
    expected = model.decode(x[None], bandwidth_id=bandwidth_id)[0]
    assert relative_error(stream_features(model, x, chunk_sizes(64, "random"), bandwidth_id), expected) <= TOLERANCE


def test_push_returns_exactly_the_samples_the_lookahead_allows() -> None:
    """After t frames, (t - lookahead) * hop - trim samples are out: all that no later frame changes."""
    model = random_model(checkpoint_config("mel", num_layers=3))
    ahead, hop, trim = model.lookahead.frames, model.hop_length, model.head.synthesis.trim
    assert ahead == 3 * (1 + 3)  # the input conv and each ConvNeXt block reach 3 frames
    stream, out = model.stream(), 0
    for t in range(1, 40):
        out += stream.push(torch.randn(model.n_features, 1)).shape[0]
        assert out == max(0, (t - ahead) * hop - trim)
    assert out + stream.flush().shape[0] == model.num_samples(39)


def test_streams_batched_together_equal_each_alone() -> None:
    """Streams of unequal chunks and bandwidths, stepped in one call, each get their solo audio."""
    model = random_model(checkpoint_config("encodec", num_layers=2))
    feats = [torch.randn(model.n_features, n) for n in (33, 5, 21)]
    bandwidths = [0, 2, 3]
    states = [StreamState.start(model, b) for b in bandwidths]
    schedules = [chunk_sizes(f.shape[1], "random", seed=i) for i, f in enumerate(feats)]
    pieces: list[list[torch.Tensor]] = [[] for _ in feats]
    offsets = [0] * len(feats)
    for step in range(max(len(s) for s in schedules) + 1):
        active = [i for i in range(len(feats)) if not states[i].finished]
        if not active:
            break
        chunks, final = [], []
        for i in active:
            n = schedules[i][step] if step < len(schedules[i]) else 0
            chunks.append(feats[i][:, offsets[i]:offsets[i] + n])
            offsets[i] += n
            final.append(step >= len(schedules[i]) - 1)
        for i, audio in zip(active, decode_steps(model, [states[i] for i in active], chunks, final), strict=True):
            pieces[i].append(audio)
    for f, b, p in zip(feats, bandwidths, pieces, strict=True):
        assert relative_error(torch.cat(p), model.decode(f[None], bandwidth_id=b)[0]) <= TOLERANCE


def test_streaming_arithmetic_is_within_1_2x_of_offline_at_10_frame_chunks() -> None:
    """Context is carried, not recomputed: counted matmul and convolution FLOPs, 8 ConvNeXt blocks."""
    model = random_model(checkpoint_config("mel", dim=64, num_layers=8))
    x = torch.randn(model.n_features, 200)
    with FlopCounterMode(display=False) as offline:
        model.decode(x[None])
    with FlopCounterMode(display=False) as streamed:
        stream_features(model, x, [10] * 20)
    ratio = streamed.get_total_flops() / offline.get_total_flops()
    assert 0.95 <= ratio <= 1.2, ratio


def test_stream_errors_say_what_was_expected() -> None:
    model = random_model(checkpoint_config("mel"))
    stream = model.stream()
    with pytest.raises(InputError, match="channels"):
        stream.push(torch.randn(model.n_features + 1, 4))
    with pytest.raises(InputError, match="NaN"):
        stream.push(torch.full((model.n_features, 2), float("nan")))
    stream.flush()
    with pytest.raises(InputError, match="ended"):
        stream.push(torch.randn(model.n_features, 4))
    encodec = random_model(checkpoint_config("encodec"))
    with pytest.raises(InputError, match="no bandwidth"):
        encodec.stream().push(torch.randn(encodec.n_features, 4))
    codes_stream = encodec.stream(bandwidth_id=0)
    with pytest.raises(InputError, match="codebooks"):
        codes_stream.push_codes(torch.randint(0, 1024, (8, 3)))


@pytest.mark.parametrize("how", ["single", "random"])
@pytest.mark.parametrize("kind", ["mel", "encodec"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_stream_equals_its_offline_decode(dtype: torch.dtype, kind: str, how: str) -> None:
    # An ulp of bfloat16 anywhere grows to ~5e-3 of the audio: every kernel must round as the offline decode's
    # (the embedding conv on the streams' transposed rows, one-row matmuls did not).
    model = random_model(checkpoint_config(kind, dim=64, num_layers=2)).to(dtype)  # type: ignore[arg-type]
    bandwidth_id = 1 if kind == "encodec" else None
    x = model.codes_to_features(torch.randint(0, 1024, (4, 60)))[0] if kind == "encodec" else \
        torch.randn(model.n_features, 60) * 2 - 3
    expected = model.decode(x[None], bandwidth_id=bandwidth_id)[0]
    actual = stream_features(model, x, chunk_sizes(60, how), bandwidth_id)
    assert relative_error(actual, expected) <= TOLERANCE
