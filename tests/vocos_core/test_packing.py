"""Packing items end to end for the backbone (vocos_core.packing), and decode_batch's use of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vocos_core import Vocos
from vocos_core.packing import Packing, packed_length

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


def test_items_lie_end_to_end_with_gaps_between() -> None:
    p = Packing.of([4, 1, 3], gap=2)
    assert (p.starts, p.total) == ((0, 6, 9), 12)
    assert p.mask(torch.device("cpu")).tolist() == [[True] * 4 + [False] * 2 + [True] + [False] * 2 + [True] * 3]


def test_pack_then_unpack_gives_each_item_back_padded() -> None:
    items = [torch.randn(5, t) for t in (4, 1, 3)]
    p = Packing.of([x.shape[-1] for x in items], gap=2)
    packed = p.pack(items)  # (1, C, total)
    assert packed.shape == (1, 5, 12)
    assert torch.equal(packed[0, :, 4:6], torch.zeros(5, 2)) and torch.equal(packed[0, :, 7:9], torch.zeros(5, 2))
    unpacked = p.unpack(packed.transpose(1, 2))  # (1, total, C) -> (B, max T, C)
    assert unpacked.shape == (3, 4, 5)
    for i, x in enumerate(items):
        t = x.shape[-1]
        assert torch.equal(unpacked[i, :t], x.t()) and not unpacked[i, t:].any()


def test_packed_lengths_take_8_sizes_per_octave_and_add_at_most_an_eighth() -> None:
    sizes = [packed_length(t) for t in range(1, 5000)]
    assert all(t <= s <= t * 1.125 for t, s in zip(range(1, 5000), sizes, strict=True))
    assert sizes == sorted(sizes)
    assert len({s for s in sizes if 512 <= s < 1024}) == 8
    assert len({s for s in sizes if 1 <= s < 16}) == 15  # short sequences stay exact


def test_the_sequence_ends_in_masked_padding_up_to_its_packed_length() -> None:
    items = [torch.randn(3, t) for t in (20, 30)]
    p = Packing.of([x.shape[-1] for x in items], gap=3)
    assert p.total == packed_length(53) == 56
    packed = p.pack(items)
    assert packed.shape == (1, 3, 56) and not packed[0, :, 53:].any()
    assert p.mask(torch.device("cpu"))[0, 53:].tolist() == [False] * 3
    assert p.per_frame(torch.tensor([1, 2]))[0, 50:].tolist() == [2] * 6
    unpacked = p.unpack(packed.transpose(1, 2))
    assert torch.equal(unpacked[1], items[1].t()) and torch.equal(unpacked[0, :20], items[0].t())


def test_per_frame_values_follow_the_items() -> None:
    p = Packing.of([2, 1, 2], gap=1)
    assert p.per_frame(torch.tensor([7, 8, 9])).tolist() == [[7, 7, 8, 8, 9, 9, 9]]


@pytest.mark.parametrize("name", ["vocos-mel-tiny", "vocos-encodec-tiny"])
def test_decode_batch_runs_the_backbone_on_real_frames_and_gaps(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Vocos.from_pretrained(REFERENCE / name)
    seen: list[tuple[int, ...]] = []
    forward = model.backbone.forward

    def spy(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return forward(x, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(model.backbone, "forward", spy)
    lengths = [30, 3, 12]
    ids = [0, 3, 1] if model.kind == "encodec" else None
    out = model.decode_batch([torch.randn(model.n_features, t) for t in lengths], ids)
    gap = model.backbone.reach
    # 45 frames of items and 2 gaps, rounded up to 52: not 3 x 30 padded frames.
    assert seen == [(1, model.n_features, packed_length(sum(lengths) + gap * (len(lengths) - 1)))]
    assert [a.shape[0] for a in out] == [model.num_samples(t) for t in lengths]
