"""Streaming decode: feature frames in as they arrive, audio out as soon as no later frame can change it.

The concatenated output of a stream equals the offline ``decode`` of all its frames (to float32
rounding): the backbone carries each convolution's context (:mod:`.backbone`) and the head carries
the overlap-add's partial sums (:mod:`.synthesis`). :func:`decode_steps` advances many streams of one
model in one batched call; :class:`VocosStream` is one stream on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .. import inputs
from ..errors import InputError
from ..feature_extractors import ENCODEC_BINS
from . import backbone as streaming_backbone
from .context import split_rows
from .synthesis import OverlapAddState, overlap_add_steps

if TYPE_CHECKING:
    from ..pretrained import Vocos


@dataclass(frozen=True)
class Lookahead:
    """How far ahead of its audio a stream must be fed for that audio to be final.

    frames: feature frames beyond a frame that its hidden state depends on.
    samples: audio samples a stream holds back: ``frames * hop`` plus the overlap-add's own delay.
    ms: ``samples`` in milliseconds at the model's rate.
    """

    frames: int
    samples: int
    ms: float


def lookahead(model: Vocos) -> Lookahead:
    synthesis = model.head.synthesis
    frames = streaming_backbone.lookahead_frames(model.backbone)
    # After n frames the samples before n * hop (pre-trim) are final; n * hop - trim are out.
    samples = frames * synthesis.hop + synthesis.trim
    return Lookahead(frames, samples, 1000.0 * samples / model.sample_rate)


class StreamState:
    """Everything one stream carries between steps; made by :meth:`start`, advanced by :func:`decode_steps`."""

    def __init__(self, model: Vocos, bandwidth_id: int | None) -> None:
        like = model.head.out.weight
        self.backbone = streaming_backbone.start_state(model.backbone, like)
        self.overlap_add = OverlapAddState.start(model.head.synthesis, like.device)
        self.bandwidth_id = bandwidth_id
        self.frames_in = 0
        self.samples_out = 0
        self.finished = False

    @classmethod
    def start(cls, model: Vocos, bandwidth_id: int | None = None) -> StreamState:
        """A new stream of ``model``; ``bandwidth_id`` is required by (and only used by) AdaLayerNorm models."""
        if getattr(model.backbone, "adanorm", False):
            inputs.check_bandwidth_ids(bandwidth_id, model.bandwidths, 1)
            return cls(model, int(bandwidth_id))  # type: ignore[arg-type]
        return cls(model, None)


@torch.inference_mode()
def decode_steps(model: Vocos, states: Sequence[StreamState], chunks: Sequence[torch.Tensor],
                 final: Sequence[bool]) -> list[torch.Tensor]:
    """Advance streams of one model together: ``chunks[i]`` ``(C, t_i)`` features (``t_i >= 0``) for
    stream i -> its newly final audio ``(S_i,)``; ``final[i]`` ends stream i (its remaining audio comes out).

    One batched call for all streams: their rows run through each layer together.
    """
    assert len(states) == len(chunks) == len(final) and states, "one chunk and one flag per stream"
    for state in states:
        if state.finished:
            raise InputError("this stream has ended (flush was called); start a new stream")
    dtype, device = model.head.out.weight.dtype, model.head.out.weight.device
    rows = [c.to(device, dtype).t() for c in chunks]  # (C, t) -> (t, C): frame-major rows
    ids = None if states[0].bandwidth_id is None else [int(s.bandwidth_id or 0) for s in states]
    hidden = streaming_backbone.step(model.backbone, [s.backbone for s in states], rows, final, ids)
    counts = [h.shape[0] for h in hidden]
    head = model.head
    if sum(counts):
        per_stream = split_rows(head.frames(torch.cat(hidden).unsqueeze(0))[0], counts)  # (R, win) rows
    else:
        per_stream = [torch.zeros(0, head.synthesis.win_length, device=device) for _ in states]
    pieces = overlap_add_steps(head.synthesis, [s.overlap_add for s in states], per_stream, final)
    out = []
    for state, chunk, piece, last in zip(states, chunks, pieces, final, strict=True):
        audio = head.finish(piece)
        state.frames_in += chunk.shape[-1]
        state.samples_out += audio.shape[0]
        state.finished = last
        out.append(audio)
    return out


class VocosStream:
    """One stream of a model: :meth:`push` frames as they arrive, :meth:`flush` at the end.

    ``torch.cat`` of every returned piece equals ``model.decode`` of all pushed frames.
    """

    def __init__(self, model: Vocos, bandwidth_id: int | None = None) -> None:
        self.model = model
        self.state: StreamState | None = None
        self.codebooks: int | None = None  # EnCodec codes per frame, fixed by the bandwidth
        if model.kind == "encodec" and bandwidth_id is not None:
            self.codebooks = model.num_codebooks(bandwidth_id)
        if model.kind != "encodec" or bandwidth_id is not None:
            self.state = StreamState.start(model, bandwidth_id)

    @property
    def lookahead(self) -> Lookahead:
        return lookahead(self.model)

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """Feature frames ``(C, t)``, ``t >= 1`` -> the audio samples ``(S,)`` now final (possibly none)."""
        x = inputs.check_features(frames.unsqueeze(0) if isinstance(frames, torch.Tensor) and frames.dim() == 2
                                  else frames, self.model.n_features, "frames")
        if x.shape[0] != 1:
            raise InputError(f"frames: expected shape ({self.model.n_features}, t), got {tuple(frames.shape)}")
        return decode_steps(self.model, [self._state()], [x[0]], [False])[0]

    def push_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """EnCodec codes ``(K, t)`` -> the audio samples now final; K fixes the bandwidth on the first call
        when none was given, and must stay the same."""
        fe = self.model._require_encodec()
        if isinstance(codes, torch.Tensor) and codes.dim() == 3:
            raise InputError(f"codes: expected shape (K, t), got {tuple(codes.shape)}")
        k = inputs.check_codes(codes, fe.num_q, ENCODEC_BINS).shape[0]
        if self.state is None:
            self.state = StreamState.start(self.model, self.model.bandwidth_id_for_codebooks(k))
            self.codebooks = k
        if k != self.codebooks:
            raise InputError(f"codes: this stream's bandwidth uses {self.codebooks} codebooks, got {k}")
        return self.push(self.model.codes_to_features(codes)[0])

    def flush(self) -> torch.Tensor:
        """End the stream: its remaining samples ``(S,)``."""
        empty = torch.zeros(self.model.n_features, 0)
        return decode_steps(self.model, [self._state()], [empty], [True])[0]

    def _state(self) -> StreamState:
        if self.state is None:
            raise InputError("this EnCodec stream has no bandwidth yet: pass bandwidth_id or push codes first")
        return self.state
