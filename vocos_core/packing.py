"""Items of unequal lengths laid end to end in one sequence, for the backbone of ``decode_batch``.

A padded batch ``(B, C, T_max)`` makes the backbone compute ``B * T_max`` frames, of which only
``sum(T_i)`` are real: for 8 items of 5-10 s, 30 % of the work goes to padding. Packed, the items
follow each other in one sequence ``(1, C, sum(T_i) + gap * (B - 1))`` with ``gap`` zero frames
between neighbours, so the backbone computes the real frames and a few gap frames only.

Why each item still gets exactly its solo output: every backbone layer but the convolutions acts
on each frame alone, and a convolution that reaches ``r`` frames either side sees, at an item's
edge, the zeros of the gap where alone it would see its own zero padding, as long as
``gap >= r`` and the gap frames are zeroed before every convolution (the backbone's ``mask``).
The sequence ends in a few more masked zero frames, up to one of a few lengths (:func:`packed_length`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Packed lengths are rounded up to one of 8 sizes per octave: at most 12.5 % more frames. Each new
# length is a new shape for oneDNN's convolution kernels and new buffer sizes for glibc's heap. With
# exact lengths a server fed varied batches kept growing its memory (the soak, scripts/soak.py);
# with 8 sizes per octave it stays flat (figures in docs/reliability.md).
SIZES_PER_OCTAVE = 8


def packed_length(frames: int) -> int:
    """``frames`` rounded up to a multiple of 2 ** (floor(log2(frames)) - 3): 8 sizes per octave."""
    step = 2 ** max(0, frames.bit_length() - SIZES_PER_OCTAVE.bit_length())
    return -(-frames // step) * step


@dataclass(frozen=True)
class Packing:
    """Where each item lies in the packed sequence: item i is frames ``starts[i]`` to ``starts[i] + lengths[i]``;
    frames after the last item, up to ``total``, are padding."""

    lengths: tuple[int, ...]
    starts: tuple[int, ...]
    total: int

    @classmethod
    def of(cls, lengths: Sequence[int], gap: int) -> Packing:
        assert len(lengths) > 0 and min(lengths) > 0 and gap >= 0
        starts, position = [], 0
        for t in lengths:
            starts.append(position)
            position += t + gap
        return cls(tuple(lengths), tuple(starts), packed_length(position - gap))

    def pack(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[(C, T_i)]`` -> ``(1, C, total)``, zeros in the gaps."""
        first = items[0]
        packed = first.new_zeros(1, first.shape[0], self.total)
        for x, start in zip(items, self.starts, strict=True):
            packed[0, :, start:start + x.shape[-1]] = x
        return packed

    def mask(self, device: torch.device) -> torch.Tensor:
        """``(1, total)`` bool, True on the items' frames, False in the gaps and the padding."""
        mask = torch.zeros(1, self.total, dtype=torch.bool, device=device)
        for start, t in zip(self.starts, self.lengths, strict=True):
            mask[0, start:start + t] = True
        return mask

    def per_frame(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-item values ``(B,)`` -> ``(1, total)``, each frame with its item's (a gap frame with the next
        item's, padding with the last's)."""
        assert ids.shape == (len(self.lengths),)
        ends = torch.tensor([s + t for s, t in zip(self.starts, self.lengths, strict=True)], device=ids.device)
        item = torch.bucketize(torch.arange(self.total, device=ids.device), ends, right=True)
        return ids[item.clamp_(max=len(self.lengths) - 1)].unsqueeze(0)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """``(1, total, D)`` -> ``(B, max T_i, D)``, each item's frames from the start, zeros after."""
        out = packed.new_zeros(len(self.lengths), max(self.lengths), packed.shape[-1])
        for i, (start, t) in enumerate(zip(self.starts, self.lengths, strict=True)):
            out[i, :t] = packed[0, start:start + t]
        return out
