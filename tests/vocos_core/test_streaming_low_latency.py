"""Low-latency streams: audio out ``lookahead_frames`` behind the input, as long as the offline decode,
each sample sent once, the exact decode going on underneath untouched by the guesses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vocos_core import Vocos
from vocos_core.errors import InputError
from vocos_core.streaming import StreamState, decode_steps
from vocos_core.streaming.backbone import convolutions
from vocos_core.testing import checkpoint_config, random_model

from .test_streaming import TOLERANCE, chunk_sizes, relative_error

FRAMES = 53


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"{tuple(actual.shape)} != {tuple(expected.shape)}"
    return float((actual - expected).norm() / expected.norm())


def model_and_input(kind: str, backbone: str = "convnext", head: str = "istft",
                    padding: str | None = None) -> tuple[Vocos, torch.Tensor, torch.Tensor, int | None]:
    """A tiny random model, a random input of FRAMES frames and its offline decode."""
    model = random_model(checkpoint_config(kind, num_layers=2, backbone=backbone, head=head, padding=padding))
    x = torch.randn(model.n_features, FRAMES)
    bandwidth_id = 1 if kind == "encodec" else None
    extra = {} if bandwidth_id is None else {"bandwidth_id": torch.tensor([bandwidth_id])}
    return model, x, model.decode(x[None], **extra)[0], bandwidth_id


def run(model: Vocos, x: torch.Tensor, sizes: list[int], lookahead_frames: int | None,
        bandwidth_id: int | None = None) -> list[torch.Tensor]:
    """Every piece a stream returns, the flush's last."""
    stream, pieces, t = model.stream(bandwidth_id, lookahead_frames=lookahead_frames), [], 0
    for n in sizes:
        pieces.append(stream.push(x[:, t:t + n]))
        t += n
    return [*pieces, stream.flush()]


CONFIGS = [("mel", "convnext", "istft", "center"), ("mel", "convnext", "istft", "same"),
           ("mel", "resnet", "istft", None), ("mel", "convnext", "imdct_cos", None),
           ("mel", "convnext", "imdct_symexp", None), ("encodec", "convnext", "istft", None)]


@pytest.mark.parametrize(("kind", "backbone", "head", "padding"), CONFIGS)
def test_audio_comes_out_lookahead_frames_behind_and_as_long_as_offline(kind: str, backbone: str, head: str,
                                                                       padding: str | None) -> None:
    model, x, expected, bandwidth_id = model_and_input(kind, backbone, head, padding)
    exact_frames = model.lookahead.frames
    for ahead in (0, 1, exact_frames // 2, exact_frames - 1):
        stream = model.stream(bandwidth_id, lookahead_frames=ahead)
        assert stream.lookahead.frames == ahead
        assert stream.lookahead.samples == model.lookahead.samples - (exact_frames - ahead) * model.hop_length
        out, t = 0, 0
        for n in chunk_sizes(FRAMES, "random", seed=ahead):
            out += stream.push(x[:, t:t + n]).shape[0]
            t += n
            assert out == min(max(0, t * model.hop_length - stream.lookahead.samples), expected.shape[0]), (ahead, t)
        assert out + stream.flush().shape[0] == expected.shape[0]


@pytest.mark.parametrize(("kind", "backbone", "head", "padding"), CONFIGS)
def test_error_falls_as_the_lookahead_grows_and_the_full_lookahead_is_exact(kind: str, backbone: str, head: str,
                                                                           padding: str | None) -> None:
    model, x, expected, bandwidth_id = model_and_input(kind, backbone, head, padding)
    sizes = chunk_sizes(FRAMES, "random", seed=3)
    exact_frames = model.lookahead.frames
    errors = [relative_l2(torch.cat(run(model, x, sizes, ahead, bandwidth_id)), expected)
              for ahead in (0, exact_frames // 2, exact_frames - 1)]
    assert errors[0] > errors[1] > errors[2] > 0, errors
    full = torch.cat(run(model, x, sizes, exact_frames, bandwidth_id))
    assert torch.equal(full, torch.cat(run(model, x, sizes, None, bandwidth_id)))
    assert relative_error(full, expected) <= TOLERANCE


@pytest.mark.parametrize("given_up", ["all", "most", "one"])
@pytest.mark.parametrize(("kind", "backbone", "head", "padding"), CONFIGS)
def test_every_sample_is_the_offline_decode_of_the_frames_in_when_it_left(kind: str, backbone: str, head: str,
                                                                         padding: str | None, given_up: str) -> None:
    """The definition of the guess: a sample not final when it is due is what the offline decode of the
    frames so far, then the last one held as far as the input convolution reaches, gives there; a
    final one is the offline decode of all frames. (The guess computes only the frames it lets out, so
    giving up one frame of lookahead computes one frame per layer.)"""
    model, x, expected, bandwidth_id = model_and_input(kind, backbone, head, padding)
    extra = {} if bandwidth_id is None else {"bandwidth_id": torch.tensor([bandwidth_id])}
    ahead = {"all": 0, "most": 2, "one": model.lookahead.frames - 1}[given_up]
    hold = convolutions(model.backbone)[0][0] // 2  # the input convolution's reach: 3 frames, 1 for the ResNet
    stream, t, out = model.stream(bandwidth_id, lookahead_frames=ahead), 0, 0
    for n in chunk_sizes(FRAMES, "random", seed=5):
        piece = stream.push(x[:, t:t + n])
        t += n
        assert stream.state is not None
        final_until = min(max(out, stream.state.samples_exact), out + piece.shape[0])
        held = torch.cat([x[:, :t], x[:, t - 1:t].expand(-1, hold)], dim=1)
        prefix = model.decode(held[None], **extra)[0]
        exact, guessed = piece[: final_until - out], piece[final_until - out:]
        scale = float(expected.abs().max())
        guess_of = prefix[final_until:final_until + guessed.shape[0]]
        for actual, want in ((exact, expected[out:final_until]), (guessed, guess_of)):
            assert actual.shape == want.shape
            assert actual.numel() == 0 or float((actual - want).abs().max()) <= TOLERANCE * scale
        out += piece.shape[0]


@pytest.mark.parametrize("n_fft", [512, 400, 384])
def test_a_head_whose_hop_is_over_half_its_window_never_runs_ahead_of_the_offline_length(n_fft: int) -> None:
    """With the end trim longer than the overlap-add's tail, lookahead_frames=0 would promise samples
    past the offline decode of the frames so far: capped there, the guess still reaches it."""
    config = checkpoint_config("mel", num_layers=1)
    config["head"]["init_args"].update(n_fft=n_fft, hop_length=256)
    model = random_model(config)
    x = torch.randn(model.n_features, 30)
    expected = model.decode(x[None])[0]
    stream, out = model.stream(lookahead_frames=0), 0
    for t in range(2, 31, 2):
        out += stream.push(x[:, t - 2:t]).shape[0]
        assert out == min(max(0, t * 256 - stream.lookahead.samples), model.num_samples(t)), (t, out)
    assert out + stream.flush().shape[0] == expected.shape[0]


def test_the_guesses_leave_the_exact_decode_untouched() -> None:
    """Samples that were final before they were due go out exact: with chunks longer than the
    frames given up, most of every chunk's audio, and all that the flush returns."""
    model, x, expected, _ = model_and_input("mel")
    sizes = [8] * (FRAMES // 8) + [FRAMES % 8]
    pieces = run(model, x, sizes, model.lookahead.frames - 2)
    tail = pieces[-1]
    assert tail.shape[0] > 0
    assert relative_error(tail, expected[-tail.shape[0]:]) <= TOLERANCE
    # After the first chunks, each chunk's first 6 of 8 frames' worth of audio had become final.
    done = sum(p.shape[0] for p in pieces[:3])
    exact_part = pieces[3][: 6 * model.hop_length]
    assert relative_error(exact_part, expected[done:done + exact_part.shape[0]]) <= TOLERANCE


def test_low_latency_and_exact_streams_batch_together() -> None:
    model, x, expected, _ = model_and_input("mel")
    alone = torch.cat(run(model, x, [5] * (FRAMES // 5) + [FRAMES % 5], 2))
    states = [StreamState.start(model), StreamState.start(model, lookahead_frames=2), StreamState.start(model)]
    pieces: list[list[torch.Tensor]] = [[], [], []]
    for t in range(0, FRAMES, 5):
        for i, piece in enumerate(decode_steps(model, states, [x[:, t:t + 5]] * 3, [False] * 3)):
            pieces[i].append(piece)
    for i, piece in enumerate(decode_steps(model, states, [x[:, :0]] * 3, [True] * 3)):
        pieces[i].append(piece)
    assert relative_error(torch.cat(pieces[0]), expected) <= TOLERANCE
    assert relative_error(torch.cat(pieces[2]), expected) <= TOLERANCE
    assert relative_error(torch.cat(pieces[1]), alone) <= TOLERANCE


def test_any_integer_type_is_taken_and_the_full_lookahead_is_exact() -> None:
    model = random_model(checkpoint_config("mel", num_layers=2))
    assert model.stream(lookahead_frames=np.int64(3)).lookahead.frames == 3  # type: ignore[arg-type]
    state = StreamState(model, None, lookahead_frames=model.lookahead.frames)
    assert state.exact and state.lookahead == model.lookahead


@pytest.mark.parametrize("bad", [-1, 10, 1.5, True, "3"])
def test_a_lookahead_outside_the_model_s_range_is_refused(bad: object) -> None:
    model = random_model(checkpoint_config("mel", num_layers=2))
    assert model.lookahead.frames == 9  # 3 frames for the input conv, 3 per ConvNeXt block
    with pytest.raises(InputError, match=r"lookahead_frames must be an integer in 0\.\.9"):
        model.stream(lookahead_frames=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"lookahead_frames must be an integer in 0\.\.9"):
        StreamState.start(model, lookahead_frames=bad)  # type: ignore[arg-type]
