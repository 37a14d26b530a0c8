"""Overlap-add for a stream: windowed time frames in, the audio samples no later frame can change out.

Frame ``t`` covers pre-trim samples ``t * hop .. t * hop + win``, so once ``n`` frames are in, every
sample before ``n * hop`` is complete; the ``win - hop`` samples after it (and, for the inverse STFT,
their window envelope) are carried to the next step. The first and last ``trim`` samples are dropped,
as the offline transform trims them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..spectral_ops import ENVELOPE_EPS, IMDCT, ISTFT, overlap_add_btw


@dataclass
class OverlapAddState:
    """One stream's carried partial sums: ``tail`` ``(win - hop,)`` of audio and, with an envelope,
    ``envelope`` of the squared window; ``position``: pre-trim index of the next sample out."""

    tail: torch.Tensor
    envelope: torch.Tensor | None
    position: int = 0

    @classmethod
    def start(cls, synthesis: ISTFT | IMDCT, device: torch.device) -> OverlapAddState:
        overlap = synthesis.win_length - synthesis.hop
        has_envelope = synthesis.window_square() is not None
        return cls(torch.zeros(overlap, device=device), torch.zeros(overlap, device=device) if has_envelope else None)


def overlap_add_steps(synthesis: ISTFT | IMDCT, states: Sequence[OverlapAddState], frames: Sequence[torch.Tensor],
                      final: Sequence[bool]) -> list[torch.Tensor]:
    """Add stream i's ``(n_i, win)`` windowed frames (``n_i >= 0``) to it, all streams in one batched
    pass; returns each stream's newly final samples ``(S_i,)``. ``final[i]`` ends stream i.

    Streams with fewer frames are padded with zero frames, which add nothing to the samples kept.
    """
    hop, win = synthesis.hop, synthesis.win_length
    counts = [f.shape[0] for f in frames]
    n = max(1, max(counts))
    batch = frames[0].new_zeros(len(frames), n, win)  # (N, n, win)
    for i, f in enumerate(frames):
        batch[i, : f.shape[0]] = f
    audio = overlap_add_btw(batch, hop)  # (N, (n - 1) * hop + win)
    audio[:, : win - hop] += torch.stack([s.tail for s in states])
    square = synthesis.window_square()
    envelope = None
    if square is not None:
        mask = torch.arange(n, device=batch.device)[None, :] < torch.tensor(counts, device=batch.device)[:, None]
        envelope = overlap_add_btw(mask[:, :, None] * square, hop)  # (N, (n - 1) * hop + win): padding adds 0
        envelope[:, : win - hop] += torch.stack([s.envelope for s in states])  # type: ignore[misc]
    out = []
    for i, (state, count, last) in enumerate(zip(states, counts, final, strict=True)):
        done = count * hop + (win - hop if last else 0)  # samples now complete
        carried = slice(count * hop, count * hop + win - hop)
        state.tail = audio[i, carried].clone()  # a copy: a view would keep the whole batch alive
        if envelope is not None:
            state.envelope = envelope[i, carried].clone()
            mine = audio[i, :done] / envelope[i, :done].clamp_min(ENVELOPE_EPS)
        else:  # a copy: the caller's audio would otherwise keep every stream's of this step alive
            mine = audio[i, :done].clone()
        out.append(_trim(synthesis, state, mine, last))
    return out


def _trim(synthesis: ISTFT | IMDCT, state: OverlapAddState, out: torch.Tensor, final: bool) -> torch.Tensor:
    """Drop what falls in the first ``trim`` samples of the stream and, at its end, the last ``trim``."""
    start, end = state.position, state.position + out.shape[0]
    state.position = end
    keep_from = max(0, synthesis.trim - start)
    keep_to = out.shape[0] - (synthesis.trim if final else 0)
    return out[keep_from:max(keep_from, keep_to)]
