"""Carried context of one convolution for many streams at once: the rows a stream's next outputs need.

A convolution of span ``s`` (``(kernel - 1) * dilation``) with ``s / 2`` zero frames of padding each
side gives output frame ``t`` from input frames ``t - s/2 .. t + s/2``. A stream that has fed it ``n``
input frames can have ``n - s/2`` outputs final; the inputs still needed for later outputs (at most
``s`` rows) are its context. A stream starts with ``s/2`` zero rows of context, the left padding,
and its last step appends ``s/2`` zero rows, the right padding: exactly the zeros the offline
convolution pads with, so every output equals the offline one.

Steps of many streams run as one call: each stream's context and new rows are laid end to end, the
convolution runs once over the whole sequence with no padding, and only the outputs whose window
lies inside one stream's rows are kept (:class:`Segments`). The sequence is padded with zero rows to
a :func:`~vocos_core.shape_buckets.bucket` length, so the convolution sees few distinct shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..shape_buckets import bucket


def initial_context(span: int, channels: int, like: torch.Tensor) -> torch.Tensor:
    """A fresh stream's context ``(span // 2, channels)``: the convolution's left zero padding."""
    return like.new_zeros(span // 2, channels)


@dataclass(frozen=True)
class Segments:
    """Streams' rows for one convolution, end to end, and where each stream's valid outputs lie.

    rows: ``(L, C)``, stream i's context then its new rows (then its right padding if it ends).
    counts: outputs each stream gets from this step.
    index: ``(sum(counts),)`` positions, in the unpadded convolution's output ``(L - span, C)``, of
        those outputs, stream after stream.
    contexts: each stream's context for its next step, ``(<= span, C)``.
    """

    rows: torch.Tensor
    counts: tuple[int, ...]
    index: torch.Tensor
    contexts: tuple[torch.Tensor, ...]
    span: int

    @classmethod
    def of(cls, contexts: Sequence[torch.Tensor], new: Sequence[torch.Tensor], final: Sequence[bool],
           span: int, limits: Sequence[int | None] | None = None) -> Segments:
        """Lay out ``contexts[i]`` ``(c_i, C)`` then ``new[i]`` ``(n_i, C)`` for every stream; stream i keeps
        at most ``limits[i]`` outputs (None: all)."""
        pieces: list[torch.Tensor] = []
        starts, counts, lengths = [], [], []
        start = 0
        for i, (ctx, rows, last) in enumerate(zip(contexts, new, final, strict=True)):
            pieces += [ctx, rows]
            length = ctx.shape[0] + rows.shape[0]
            if last:
                pieces.append(ctx.new_zeros(span // 2, ctx.shape[1]))
                length += span // 2
            starts.append(start)
            limit = None if limits is None else limits[i]
            counts.append(max(0, length - span) if limit is None else min(limit, max(0, length - span)))
            lengths.append(length)
            start += length
        if bucket(start) > start:  # zero rows up to a bucket: no kept output reads them
            pieces.append(contexts[0].new_zeros(bucket(start) - start, contexts[0].shape[1]))
        all_rows = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        index = _runs(starts, counts)
        # Copies, not views: a view would keep this step's rows (every stream's, every frame) alive in
        # each stream's state until its next step. One copy for all streams; each keeps a piece of it.
        kept = [all_rows[s + c: s + n] for s, c, n in zip(starts, counts, lengths, strict=True)]
        next_contexts = tuple(torch.split(torch.cat(kept), [k.shape[0] for k in kept]))
        return cls(all_rows, tuple(counts), index.to(all_rows.device), next_contexts, span)

    @property
    def total(self) -> int:
        return int(self.index.numel())

    def centres(self) -> torch.Tensor:
        """``(sum(counts), C)``: the input row at the centre of each kept output's window (a residual)."""
        return self.rows.index_select(0, self.index + self.span // 2)

    def keep(self, conv_out: torch.Tensor) -> torch.Tensor:
        """The kept rows ``(sum(counts), C')`` of the unpadded convolution's output ``(L - span, C')``."""
        return conv_out.index_select(0, self.index)

    def runs(self) -> bool:
        """Whether any stream gets an output (else the convolution need not run)."""
        return self.total > 0


def _runs(starts: Sequence[int], counts: Sequence[int]) -> torch.Tensor:
    """``starts[i] .. starts[i] + counts[i] - 1`` for every i, end to end: ``(sum(counts),)`` long.

    Built in Python: a few hundred indices cost less so than through ``repeat_interleave``.
    """
    return torch.tensor([j for s, c in zip(starts, counts, strict=True) for j in range(s, s + c)], dtype=torch.long)


def split_rows(rows: torch.Tensor, counts: Sequence[int]) -> list[torch.Tensor]:
    """``(sum(counts), C)`` rows, stream after stream -> one ``(counts[i], C)`` tensor per stream."""
    return list(torch.split(rows, list(counts)))


def per_row(values: Sequence[int], counts: Sequence[int], device: torch.device) -> torch.Tensor:
    """Each stream's value repeated over its rows: ``(sum(counts),)`` long."""
    return torch.repeat_interleave(torch.tensor(list(values), device=device),
                                   torch.tensor(list(counts), device=device))
