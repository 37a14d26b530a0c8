"""A Vocos decodes every frame alike: nothing in it knows where a frame sits in the input.

The backbone is convolutions and per-frame layers, the head a per-frame linear layer and an overlap-add,
so, away from the edges, frames shifted by k shift the audio by k hops, and a frame held for a while
gives audio that repeats every hop. The second is a limit of the architecture, for any weights: on a
steady input only frequencies that are multiples of sample_rate / hop (93.75 Hz for the official
24 kHz models) can last (docs/training.md, on the demo model's low-frequency phase).
"""

from __future__ import annotations

import pytest
import torch

from vocos_core.pretrained import Vocos
from vocos_core.testing import Backbone, Head, checkpoint_config, random_model

CASES: list[tuple[Backbone, Head]] = [("convnext", "istft"), ("convnext", "imdct_cos"), ("resnet", "istft"),
                                      ("convnext", "imdct_symexp")]


def _model(backbone: Backbone, head: Head) -> Vocos:
    return random_model(checkpoint_config("mel", dim=32, num_layers=2, backbone=backbone, head=head))


def _settled(model: Vocos) -> int:
    """Samples from an edge after which the edge no longer reaches (the model's lookahead, and one frame)."""
    return (model.lookahead.frames + 1) * model.hop_length


@pytest.mark.parametrize(("backbone", "head"), CASES)
def test_frames_shifted_by_k_shift_the_audio_by_k_hops(backbone: Backbone, head: Head) -> None:
    model = _model(backbone, head)
    gen = torch.Generator().manual_seed(7)
    mel = torch.randn(1, 100, 60, generator=gen) - 4.0
    before = torch.randn(1, 100, 5, generator=gen) - 4.0
    alone = model.decode(mel)[0]
    shifted = model.decode(torch.cat([before, mel], dim=-1))[0]
    start = _settled(model)
    tail = shifted[5 * model.hop_length:]
    assert tail.shape == alone.shape
    torch.testing.assert_close(tail[start:], alone[start:], rtol=0, atol=1e-5 * float(alone.abs().max()))
    assert not torch.allclose(tail[:model.hop_length], alone[:model.hop_length], atol=1e-3)  # the edge differs


@pytest.mark.parametrize(("backbone", "head"), CASES)
def test_a_held_frame_gives_audio_that_repeats_every_hop(backbone: Backbone, head: Head) -> None:
    model = _model(backbone, head)
    frame = torch.randn(1, 100, 1, generator=torch.Generator().manual_seed(8)) - 4.0
    audio = model.decode(frame.expand(1, 100, 80).contiguous())[0]
    hop, start = model.hop_length, _settled(model)
    steady = audio[start:audio.numel() - start]
    assert steady.numel() >= 10 * hop and float(steady.abs().max()) > 1e-4
    torch.testing.assert_close(steady[hop:], steady[:-hop], rtol=0, atol=1e-5 * float(steady.abs().max()))
