"""A stream's carried state: it holds only what its next steps need, one stream is safe to share between
threads, and decode_steps refuses what it cannot step (typed errors that say what was expected)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from vocos_core.errors import InputError
from vocos_core.streaming import StreamState, decode_steps
from vocos_core.streaming import stream as stream_module
from vocos_core.testing import checkpoint_config, random_model


def held_bytes(state: StreamState) -> int:
    """Bytes of the storages a stream's state keeps alive (each storage once)."""
    tensors = [*state.backbone.contexts, *state.backbone.pending, state.overlap_add.tail]
    if state.overlap_add.envelope is not None:
        tensors.append(state.overlap_add.envelope)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


@pytest.mark.parametrize("backbone", ["convnext", "resnet"])
def test_a_long_push_leaves_no_more_state_than_a_short_one(backbone: str) -> None:
    """The contexts and residual queues are copies, not views that keep a whole step's rows alive."""
    model = random_model(checkpoint_config("mel", num_layers=2, backbone=backbone))
    short, long = model.stream(), model.stream()
    short.push(torch.randn(model.n_features, 100))  # enough frames to fill every context
    long.push(torch.randn(model.n_features, 3000))
    assert short.state is not None and long.state is not None
    assert held_bytes(long.state) == held_bytes(short.state)


def test_a_step_of_many_streams_leaves_each_only_the_contexts_of_that_step() -> None:
    """Each stream keeps at most the step's contexts (a few rows a stream), not its rows (300 frames a stream)."""
    model = random_model(checkpoint_config("mel", num_layers=2))
    alone = StreamState.start(model)
    decode_steps(model, [alone], [torch.randn(model.n_features, 300)], [False])
    states = [StreamState.start(model) for _ in range(8)]
    decode_steps(model, states, [torch.randn(model.n_features, 300) for _ in states], [False] * 8)
    assert held_bytes(states[0]) <= len(states) * held_bytes(alone)
    assert held_bytes(states[0]) < 300 * model.n_features * 4  # one stream's input rows, float32


@pytest.mark.parametrize("head", ["istft", "imdct_cos"])
def test_a_stream_s_audio_does_not_keep_the_batch_s_audio_alive(head: str) -> None:
    model = random_model(checkpoint_config("mel", head=head))
    states = [StreamState.start(model) for _ in range(8)]
    audio = decode_steps(model, states, [torch.randn(model.n_features, 200) for _ in states], [False] * 8)
    assert audio[0].untyped_storage().nbytes() <= 2 * audio[0].numel() * audio[0].element_size()


def test_a_push_from_a_second_thread_waits_for_the_first_to_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads pushing to one stream at once would interleave their updates of its state and lose
    audio; the second push waits until the first is done."""
    model = random_model(checkpoint_config("mel", num_layers=2))
    stream, x = model.stream(), torch.randn(model.n_features, 40)
    inside, release = threading.Event(), threading.Event()
    overlap_add = stream_module.overlap_add_steps

    def paused(*args: Any, **kwargs: Any) -> list[torch.Tensor]:
        if threading.current_thread() is first:
            inside.set()
            release.wait(10)
        return overlap_add(*args, **kwargs)

    monkeypatch.setattr(stream_module, "overlap_add_steps", paused)
    pieces: dict[int, torch.Tensor] = {}
    first = threading.Thread(target=lambda: pieces.__setitem__(0, stream.push(x[:, :20])))
    second = threading.Thread(target=lambda: pieces.__setitem__(1, stream.push(x[:, 20:])))
    first.start()
    assert inside.wait(10)
    second.start()
    second.join(0.5)
    waited = second.is_alive()  # still waiting for the first push
    release.set()
    first.join()
    second.join()
    assert waited
    audio = torch.cat([pieces[0], pieces[1], stream.flush()])
    expected = model.decode(x[None])[0]
    assert float((audio - expected).abs().max() / expected.abs().max()) <= 1e-5


def test_decode_steps_refuses_what_it_cannot_step() -> None:
    model = random_model(checkpoint_config("mel", num_layers=2))
    other = random_model(checkpoint_config("mel", num_layers=1))
    c = model.n_features
    state = StreamState.start(model)
    with pytest.raises(InputError, match="one chunk and one final flag per stream"):
        decode_steps(model, [state], [], [])
    with pytest.raises(InputError, match="at least one stream"):
        decode_steps(model, [], [], [])
    with pytest.raises(InputError, match="twice"):
        decode_steps(model, [state, state], [torch.randn(c, 3)] * 2, [False, False])
    with pytest.raises(InputError, match="another model"):
        decode_steps(model, [StreamState.start(other)], [torch.randn(c, 3)], [False])
    with pytest.raises(InputError, match=rf"chunks\[0\]: expected shape \({c}, t\)"):
        decode_steps(model, [StreamState.start(model)], [torch.randn(c + 1, 3)], [False])
    with pytest.raises(InputError, match="ndarray"):
        decode_steps(model, [StreamState.start(model)], [np.zeros((c, 3), np.float32)], [False])  # type: ignore[list-item]
    with pytest.raises(InputError, match="floating"):
        decode_steps(model, [StreamState.start(model)], [torch.zeros(c, 3, dtype=torch.long)], [False])
    fresh = StreamState.start(model)  # nothing refused has changed a state
    out = decode_steps(model, [fresh], [torch.randn(c, 30)], [False])[0]
    assert out.shape[0] == 30 * model.hop_length - model.lookahead.samples


def test_a_push_of_no_frames_says_so_in_the_caller_s_shape() -> None:
    model = random_model(checkpoint_config("mel"))
    c = model.n_features
    with pytest.raises(InputError, match=rf"expected shape \({c}, t\) with t >= 1, got \({c}, 0\)"):
        model.stream().push(torch.zeros(model.n_features, 0))
