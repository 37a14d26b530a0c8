"""Backbones run step by step over many streams: new feature frames -> the hidden states now final.

Each convolution keeps a :mod:`~vocos_core.streaming.context` per stream; everything else in the
backbones acts on each frame alone, so it runs once over all streams' new rows. A step computes
every frame once: nothing already decoded is recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..channels_last import conv_to_btc, depthwise_conv_btc
from ..models import Backbone, VocosBackbone, VocosResNetBackbone
from ..modules import ConvNeXtBlock, MLPWorkspace, ResBlock1, WeightNormConv1d
from .context import Segments, initial_context, per_row, split_rows

LRELU_SLOPE = 0.1  # ResBlock1's default, which the official configs keep


@dataclass
class BackboneState:
    """One stream's carried rows: a context per convolution, and for the ResNet a queue per residual
    pair of the inputs whose outputs are not yet final. ``limit``: the most outputs a step needs of
    every convolution (a low-latency stream's guess, which lets out only that many frames beyond the
    exact ones: as every convolution's outputs lag its inputs by half its span, what the guess lets
    out reads no convolution's output beyond its first ``limit``); None: all.
    ``parent``: a guess's stream, stepped in the same call: at each convolution the guess starts from
    the parent's context (and residual queue) as this step leaves it."""

    contexts: list[torch.Tensor]
    pending: list[torch.Tensor] = field(default_factory=list)
    limit: int | None = None
    parent: BackboneState | None = None


def convolutions(backbone: Backbone) -> list[tuple[int, int]]:
    """``(span, channels in)`` of each convolution, in the order a frame passes them."""
    if isinstance(backbone, VocosBackbone):
        dim = backbone.config.dim
        return [(6, backbone.input_channels)] + [(2 * b.padding, dim) for b in _blocks(backbone)]
    sites = [(2 * backbone.embed.padding, backbone.input_channels)]
    for block in _resblocks(backbone):
        for c1, c2, _ in _pairs(block):
            sites += [(2 * c1.padding, backbone.config.dim), (2 * c2.padding, backbone.config.dim)]
    return sites


def lookahead_frames(backbone: Backbone) -> int:
    """Input frames beyond a hidden frame that it depends on: half of every convolution's span."""
    return sum(span // 2 for span, _ in convolutions(backbone))


def start_state(backbone: Backbone, like: torch.Tensor) -> BackboneState:
    """A fresh stream's state; ``like`` gives the dtype and device of the backbone's activations."""
    contexts = [initial_context(span, channels, like) for span, channels in convolutions(backbone)]
    pending = [] if isinstance(backbone, VocosBackbone) else \
        [like.new_zeros(0, backbone.config.dim) for _ in range(len(contexts) // 2)]
    return BackboneState(contexts, pending)


def step(backbone: Backbone, states: Sequence[BackboneState], new: Sequence[torch.Tensor],
         final: Sequence[bool], ids: Sequence[int] | None) -> list[torch.Tensor]:
    """Feed stream i its new frames ``new[i]`` ``(t_i, C_in)`` (``t_i >= 0``, frame-major); returns its
    hidden states now final, ``(o_i, dim)``. ``final[i]``: stream i ends with these frames, so all its
    remaining frames come out. ``ids``: each stream's bandwidth id (AdaLayerNorm backbones)."""
    if isinstance(backbone, VocosBackbone):
        return _step_convnext(backbone, states, new, final, ids)
    return _step_resnet(backbone, states, new, final)


def _blocks(backbone: VocosBackbone) -> list[ConvNeXtBlock]:
    return [b for b in backbone.convnext if isinstance(b, ConvNeXtBlock)]


def _resblocks(backbone: VocosResNetBackbone) -> list[ResBlock1]:
    return [b for b in backbone.resnet if isinstance(b, ResBlock1)]


def _pairs(block: ResBlock1) -> list[tuple[WeightNormConv1d, WeightNormConv1d, torch.Tensor]]:
    """ResBlock1's residual pairs: (dilated conv, conv, layer scale ``(dim, 1)``)."""
    pairs = list(zip(block.convs1, block.convs2, block.gamma, strict=True))
    assert all(isinstance(c1, WeightNormConv1d) and isinstance(c2, WeightNormConv1d) for c1, c2, _ in pairs)
    return pairs  # type: ignore[return-value]


def _advance(states: Sequence[BackboneState], site: int, new: Sequence[torch.Tensor],
             final: Sequence[bool], span: int) -> Segments:
    contexts = [s.contexts[site] for s in states]
    guesses = [i for i, s in enumerate(states) if s.parent is not None]
    position = {id(s): i for i, s in enumerate(states)} if guesses else {}
    for i in guesses:  # the parent's context once this step's rows are in (a parent does not end)
        p = position[id(states[i].parent)]
        rows = torch.cat([contexts[p], new[p]])
        contexts[i] = rows[max(0, rows.shape[0] - span):]
    segments = Segments.of(contexts, new, final, span, [s.limit for s in states])
    for state, ctx in zip(states, segments.contexts, strict=True):
        state.contexts[site] = ctx
    return segments


def _row_ids(ids: Sequence[int] | None, counts: Sequence[int], device: torch.device) -> torch.Tensor | None:
    """AdaLayerNorm ids for rows of many streams: one ``(1,)`` id if all share it, else ``(1, R)``."""
    if ids is None:
        return None
    if len(set(ids)) == 1:
        return torch.tensor([ids[0]], device=device)
    return per_row(ids, counts, device).unsqueeze(0)


def _step_convnext(backbone: VocosBackbone, states: Sequence[BackboneState], new: Sequence[torch.Tensor],
                   final: Sequence[bool], ids: Sequence[int] | None) -> list[torch.Tensor]:
    assert backbone.embed.bias is not None
    seg = _advance(states, 0, new, final, 6)
    dim = backbone.config.dim
    if seg.runs():
        conv = conv_to_btc(seg.rows.t().unsqueeze(0), backbone.embed.weight, backbone.embed.bias, padding=0)
        x = seg.keep(conv[0]).unsqueeze(0)  # (1, R, dim): the conv's output rows, streams end to end
        row_ids = _row_ids(ids, seg.counts, x.device)
        x = backbone.norm(x, row_ids) if backbone.adanorm else backbone.norm(x)
    else:
        x = seg.rows.new_zeros(1, 0, dim)
    counts = seg.counts
    for site, block in enumerate(_blocks(backbone), start=1):
        seg = _advance(states, site, split_rows(x[0], counts), final, 2 * block.padding)
        counts = seg.counts
        if not seg.runs():
            x = seg.rows.new_zeros(1, 0, dim)
            continue
        h = depthwise_conv_btc(seg.rows.unsqueeze(0), block.dwconv.weight, block._bias(), padding=0)
        x = seg.centres().unsqueeze(0)  # (1, R, dim), a fresh tensor the block updates in place
        block.mlp_update_(x, seg.keep(h[0]).unsqueeze(0), MLPWorkspace(x, block.pwconv1.out_features),
                          _row_ids(ids, counts, x.device))
    return split_rows(backbone.final_layer_norm(x)[0], counts)


def _conv_rows(conv: WeightNormConv1d, seg: Segments) -> torch.Tensor:
    """The weight-normed convolution's kept outputs ``(R, C)`` over the segments' rows ``(L, C)``."""
    out = nn.functional.conv1d(seg.rows.t().unsqueeze(0), conv.weight(), conv.bias, dilation=conv.dilation)
    return seg.keep(out[0].t())  # (C, L - span) -> (L - span, C) rows


def _step_resnet(backbone: VocosResNetBackbone, states: Sequence[BackboneState], new: Sequence[torch.Tensor],
                 final: Sequence[bool]) -> list[torch.Tensor]:
    seg = _advance(states, 0, new, final, 2 * backbone.embed.padding)
    rows = split_rows(_conv_rows(backbone.embed, seg), seg.counts) if seg.runs() else \
        [seg.rows.new_zeros(0, backbone.config.dim) for _ in states]
    site, pair = 1, 0
    for block in _resblocks(backbone):
        for c1, c2, gamma in _pairs(block):
            rows = _step_pair(states, site, pair, rows, final, (c1, c2), gamma)
            site, pair = site + 2, pair + 1
    return rows


def _step_pair(states: Sequence[BackboneState], site: int, pair: int, rows: list[torch.Tensor],
               final: Sequence[bool], convs: tuple[WeightNormConv1d, WeightNormConv1d],
               gamma: torch.Tensor) -> list[torch.Tensor]:
    """One residual pair of ResBlock1: ``x + gamma * c2(lrelu(c1(lrelu(x))))`` for streams' rows."""
    c1, c2 = convs
    dim = gamma.shape[0]
    acts = [nn.functional.leaky_relu(r, LRELU_SLOPE) for r in rows]
    seg = _advance(states, site, acts, final, 2 * c1.padding)
    mid = nn.functional.leaky_relu(_conv_rows(c1, seg), LRELU_SLOPE) if seg.runs() else seg.rows.new_zeros(0, dim)
    seg = _advance(states, site + 1, split_rows(mid, seg.counts), final, 2 * c2.padding)
    out = split_rows(_conv_rows(c2, seg), seg.counts) if seg.runs() else [mid.new_zeros(0, dim) for _ in states]
    result = []
    for state, x, y in zip(states, rows, out, strict=True):
        # The residual adds the pair's input at the same frame; inputs wait until their output is final.
        # A guess comes after its parent, whose queue is then as this step leaves it.
        queue = torch.cat([(state.parent or state).pending[pair], x])
        result.append(torch.addcmul(queue[: y.shape[0]], gamma[:, 0], y))
        state.pending[pair] = queue[y.shape[0]:].clone()  # a copy: a view would keep this step's rows alive
    return result
