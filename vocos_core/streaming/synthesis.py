"""Overlap-add for a stream: windowed time frames in, the audio samples no later frame can change out.

Frame ``t`` covers pre-trim samples ``t * hop .. t * hop + win``, so once ``n`` frames are in, every
sample before ``n * hop`` is complete; the ``win - hop`` samples after it (and, for the inverse STFT,
their window envelope) are carried to the next step. The first and last ``trim`` samples are dropped,
as the offline transform trims them.
"""

from __future__ import annotations

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


def overlap_add_step(synthesis: ISTFT | IMDCT, state: OverlapAddState, frames: torch.Tensor,
                     final: bool) -> torch.Tensor:
    """Add ``(n, win)`` windowed frames (``n >= 0``) to the stream; returns its newly final samples ``(S,)``."""
    hop, win = synthesis.hop, synthesis.win_length
    n = frames.shape[0]
    audio = overlap_add_btw(frames.unsqueeze(0), hop)[0] if n else frames.new_zeros(win - hop)
    audio[: win - hop] += state.tail
    done = n * hop + (win - hop if final else 0)  # samples of ``audio`` now complete
    state.tail = audio[n * hop:]
    out = audio[:done]
    square = synthesis.window_square()
    if square is not None:
        assert state.envelope is not None
        envelope = overlap_add_btw(square.expand(1, n, -1), hop)[0] if n else audio.new_zeros(win - hop)
        envelope[: win - hop] += state.envelope
        state.envelope = envelope[n * hop:]
        out = out / envelope[:done].clamp_min(ENVELOPE_EPS)
    return _trim(synthesis, state, out, final)


def _trim(synthesis: ISTFT | IMDCT, state: OverlapAddState, out: torch.Tensor, final: bool) -> torch.Tensor:
    """Drop what falls in the first ``trim`` samples of the stream and, at its end, the last ``trim``."""
    start, end = state.position, state.position + out.shape[0]
    state.position = end
    keep_from = max(0, synthesis.trim - start)
    keep_to = out.shape[0] - (synthesis.trim if final else 0)
    return out[keep_from:max(keep_from, keep_to)]
