"""Streaming decode: feature frames in as they arrive, audio out as soon as no later frame can change it.

The concatenated output of a stream equals the offline ``decode`` of all its frames (to float32
rounding): the backbone carries each convolution's context (:mod:`.backbone`) and the head carries
the overlap-add's partial sums (:mod:`.synthesis`). :func:`decode_steps` advances many streams of one
model in one batched call; :class:`VocosStream` is one stream on its own.
"""

from __future__ import annotations

import dataclasses
import numbers
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .. import inputs
from ..errors import InputError
from ..feature_extractors import ENCODEC_BINS
from . import backbone as streaming_backbone
from .backbone import BackboneState
from .context import split_rows
from .synthesis import OverlapAddState, overlap_add_steps

if TYPE_CHECKING:
    from ..pretrained import Vocos


@dataclass(frozen=True)
class Lookahead:
    """How far ahead of its audio a stream must be fed for that audio to come out.

    frames: feature frames beyond a frame that its hidden state depends on (exact), or that a
        low-latency stream waits for (fewer: its audio is then a guess, see :func:`decode_steps`).
    samples: audio samples a stream holds back: ``frames * hop`` plus the overlap-add's own delay.
    ms: ``samples`` in milliseconds at the model's rate.
    """

    frames: int
    samples: int
    ms: float


def lookahead(model: Vocos, frames: int | None = None) -> Lookahead:
    """The model's exact lookahead, or a low-latency stream's shorter one of ``frames`` frames
    (:func:`check_lookahead_frames`)."""
    synthesis = model.head.synthesis
    exact = streaming_backbone.lookahead_frames(model.backbone)
    frames = exact if frames is None else _checked(frames, exact)
    # After n frames the samples before n * hop (pre-trim) are final; n * hop - trim are out.
    samples = frames * synthesis.hop + synthesis.trim
    return Lookahead(frames, samples, 1000.0 * samples / model.sample_rate)


def check_lookahead_frames(model: Vocos, frames: object) -> int | None:
    """A stream's ``lookahead_frames`` setting: None (exact) or an int in ``0 ..`` the exact lookahead,
    which also means exact (returned as None)."""
    if frames is None:
        return None
    exact = streaming_backbone.lookahead_frames(model.backbone)
    frames = _checked(frames, exact)
    return None if frames == exact else frames


def _checked(frames: object, exact: int) -> int:
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or not 0 <= int(frames) <= exact:
        shown = repr(frames) if isinstance(frames, str) else str(frames)
        raise InputError(f"lookahead_frames must be an integer in 0..{exact} (this model's exact lookahead; "
                         f"fewer frames give lower latency and inexact audio), got {shown}")
    return int(frames)


class StreamState:
    """Everything one stream carries between steps; made by :meth:`start`, advanced by :func:`decode_steps`."""

    def __init__(self, model: Vocos, bandwidth_id: int | None, lookahead_frames: int | None = None) -> None:
        lookahead_frames = check_lookahead_frames(model, lookahead_frames)
        self.model = weakref.ref(model)  # the model it steps with (decode_steps checks; no reference cycle)
        like = model.head.out.weight
        self.backbone = streaming_backbone.start_state(model.backbone, like)
        self.overlap_add = OverlapAddState.start(model.head.synthesis, like.device)
        self.bandwidth_id = bandwidth_id
        self.exact = lookahead_frames is None
        self.lookahead = lookahead(model, lookahead_frames)
        # Frames a step lets out beyond the exact ones: all a guess needs to compute (BackboneState.limit),
        # and a few more where the end trim is longer than the overlap-add's tail (a head with hop > win / 2),
        # which an ending stream's last frames would otherwise not reach.
        synthesis = model.head.synthesis
        short = max(0, synthesis.trim - (synthesis.win_length - synthesis.hop))
        self.guess_frames = lookahead(model).frames - self.lookahead.frames + -(-short // synthesis.hop)
        self.frames_in = 0
        self.last_frame: torch.Tensor | None = None  # (1, C): the latest input row, which a guess holds
        self.samples_out = 0  # samples returned so far
        self.samples_exact = 0  # samples the exact decode has reached (behind samples_out when guessing)
        self.finished = False

    @classmethod
    def start(cls, model: Vocos, bandwidth_id: int | None = None, lookahead_frames: int | None = None) -> StreamState:
        """A new stream of ``model``; ``bandwidth_id`` is required by (and only used by) AdaLayerNorm models.
        ``lookahead_frames`` below the exact lookahead makes a low-latency stream (:func:`decode_steps`)."""
        if getattr(model.backbone, "adanorm", False):
            inputs.check_bandwidth_ids(bandwidth_id, model.bandwidths, 1)
            return cls(model, int(bandwidth_id), lookahead_frames)  # type: ignore[arg-type]
        return cls(model, None, lookahead_frames)


@torch.inference_mode()
def decode_steps(model: Vocos, states: Sequence[StreamState], chunks: Sequence[torch.Tensor],
                 final: Sequence[bool], guess: Sequence[bool] | None = None) -> list[torch.Tensor]:
    """Advance streams of one model together: ``chunks[i]`` ``(C, t_i)`` features (``t_i >= 0``) for
    stream i -> its new audio ``(S_i,)``; ``final[i]`` ends stream i (its remaining audio comes out).

    One batched call for all streams: their rows run through each layer together. An exact stream
    returns the samples no later frame can change. A low-latency stream (``lookahead_frames`` below
    the exact lookahead) also returns, up to its own lookahead, a guess: the offline decode of its
    frames so far followed by its last frame held for the input convolution's reach (3 frames for the
    official models; the frames beyond, an ending stream's zero padding). Its exact decode goes on
    underneath, and each sample is sent once, exact if it was final in time. ``guess[i]`` False skips
    stream i's guess this step: more of its frames follow at once (a long push cut into steps), so their
    exact audio would go out with the guess, and the guess would only cost.
    """
    _check_steps(model, states, chunks, final, guess)
    dtype, device = model.head.out.weight.dtype, model.head.out.weight.device
    rows = [c.to(device, dtype).t() for c in chunks]  # (C, t) -> (t, C): frame-major rows
    ids = None if states[0].bandwidth_id is None else [int(s.bandwidth_id or 0) for s in states]
    for state, chunk, new in zip(states, chunks, rows, strict=True):
        state.frames_in += chunk.shape[-1]
        if not state.exact and new.shape[0]:
            state.last_frame = new[-1:].clone()  # a copy: the caller may reuse its chunk's memory
    low_latency = [i for i, (s, last) in enumerate(zip(states, final, strict=True)) if not s.exact and not last]
    held_back = lookahead(model).samples if low_latency else 0  # by the model's own (exact) lookahead
    guessing = [i for i in low_latency if (guess is None or guess[i]) and _guess_due(model, states[i], held_back)]
    # A guess is one more stream of the same call: it starts from its stream's state after this step.
    guesses = [BackboneState(list(states[i].backbone.contexts), list(states[i].backbone.pending),
                             states[i].guess_frames, parent=states[i].backbone) for i in guessing]
    hold = streaming_backbone.convolutions(model.backbone)[0][0] // 2 if guessing else 0
    every = [*rows, *(_held(states[i], hold) for i in guessing)]
    frames = _frames(model, [*(s.backbone for s in states), *guesses], every, [*final, *(True for _ in guessing)],
                     None if ids is None else [*ids, *(ids[i] for i in guessing)])
    synthesis = model.head.synthesis
    exact = overlap_add_steps(synthesis, [s.overlap_add for s in states], frames[: len(states)], final)
    guessed = overlap_add_steps(synthesis, [dataclasses.replace(states[i].overlap_add) for i in guessing],
                                frames[len(states):], [True] * len(guessing)) if guessing else []
    guess_of = dict(zip(guessing, guessed, strict=True))
    out = []
    for i, (state, piece, last) in enumerate(zip(states, exact, final, strict=True)):
        piece_guessed = guess_of.get(i)
        finished_guess = None if piece_guessed is None else model.head.finish(piece_guessed)
        out.append(_emit(state, model.head.finish(piece), finished_guess, _target(model, state)))
        state.finished = last
    return out


def _check_steps(model: Vocos, states: Sequence[StreamState], chunks: Sequence[torch.Tensor],
                 final: Sequence[bool], guess: Sequence[bool] | None) -> None:
    """Refuse, before any state changes, a step :func:`decode_steps` cannot take. The chunks' values are
    not checked (NaN or Inf would make NaN audio, in this step and every later one): ``VocosStream.push``
    checks them, a caller of ``decode_steps`` checks them itself."""
    if not states:
        raise InputError("decode_steps: expected at least one stream")
    if not len(states) == len(chunks) == len(final) or (guess is not None and len(guess) != len(states)):
        given = "" if guess is None else f", {len(guess)} guess flags"
        raise InputError(f"decode_steps: expected one chunk and one final flag per stream, got {len(states)} "
                         f"states, {len(chunks)} chunks, {len(final)} final flags{given}")
    if len({id(state) for state in states}) != len(states):
        raise InputError("decode_steps: a stream's state is given twice; a step takes each stream once "
                         "(concatenate its chunks)")
    channels = model.n_features
    for i, (state, chunk) in enumerate(zip(states, chunks, strict=True)):
        if state.model() is not model:
            raise InputError(f"decode_steps: states[{i}] was started with another model; a stream steps "
                             "with the model it was started with")
        if state.finished:
            raise InputError("this stream has ended (flush was called); start a new stream")
        if not isinstance(chunk, torch.Tensor) or chunk.dim() != 2 or chunk.shape[0] != channels:
            shape = tuple(chunk.shape) if isinstance(chunk, torch.Tensor) else type(chunk).__name__
            raise InputError(f"chunks[{i}]: expected shape ({channels}, t), t >= 0, got {shape}")
        if not chunk.is_floating_point():
            raise InputError(f"chunks[{i}]: expected a floating-point tensor, got {chunk.dtype}")


def _frames(model: Vocos, backbones: Sequence[BackboneState], rows: Sequence[torch.Tensor], final: Sequence[bool],
            ids: Sequence[int] | None) -> list[torch.Tensor]:
    """Each stream's rows ``(t_i, C)`` through the backbone and the head, up to the overlap-add: the
    windowed time frames now final ``(o_i, win)``. A guess (``BackboneState.parent``, its rows the held
    last frame, ending) gives the offline decode's frames of its stream's frames so far and those
    rows, the first ``limit`` beyond the exact ones."""
    hidden = streaming_backbone.step(model.backbone, backbones, rows, final, ids)
    counts = [h.shape[0] for h in hidden]
    if not sum(counts):
        return [torch.zeros(0, model.head.synthesis.win_length, device=rows[0].device) for _ in backbones]
    return split_rows(model.head.frames(torch.cat(hidden).unsqueeze(0))[0], counts)  # (R, win) rows


def _held(state: StreamState, hold: int) -> torch.Tensor:
    """A guess's input rows ``(hold, C)``: the stream's last frame, held for as far as the backbone's
    input convolution reaches; beyond them, the zero padding of an ending stream. On the demo model's
    held-out speech this beat zero padding alone, or equalled it (docs/streaming.md)."""
    assert state.last_frame is not None, "a guess is due only once frames are in"
    return state.last_frame.expand(hold, -1)


def _guess_due(model: Vocos, state: StreamState, held_back: int) -> bool:
    """Whether, after this step (``frames_in`` counts its frames), a guess would let any sample out
    beyond the exact audio (all but the exact lookahead's ``held_back`` samples) and what has gone."""
    sent = max(state.samples_out, state.frames_in * model.head.synthesis.hop - held_back)
    return _target(model, state) > sent


def _target(model: Vocos, state: StreamState) -> int:
    """How many samples a low-latency stream has let out after ``frames_in`` frames: all but its
    lookahead's, and never more than the offline decode of those frames has (a head whose trim is
    shorter than its hop would otherwise reach past it at ``lookahead_frames=0``)."""
    frames = state.frames_in
    return min(frames * model.head.synthesis.hop - state.lookahead.samples, model.num_samples(frames))


def _emit(state: StreamState, exact: torch.Tensor, guess: torch.Tensor | None, target: int) -> torch.Tensor:
    """What ``state`` sends now: the part of its exact audio not yet sent as a guess, then (low-latency)
    the guess ``guess`` (continuing the exact audio) up to ``target`` samples in all (:func:`_target`)."""
    start = state.samples_exact
    state.samples_exact += exact.shape[0]
    new = exact[max(0, state.samples_out - start):]
    if guess is not None:
        sent = max(state.samples_out, state.samples_exact)
        new = torch.cat([new, guess[sent - state.samples_exact: max(0, target - state.samples_exact)]])
    state.samples_out += new.shape[0]
    return new


class VocosStream:
    """One stream of a model: :meth:`push` frames as they arrive, :meth:`flush` at the end.

    ``torch.cat`` of every returned piece equals ``model.decode`` of all pushed frames (a low-latency
    stream: as long, not equal).
    """

    def __init__(self, model: Vocos, bandwidth_id: int | None = None, lookahead_frames: int | None = None) -> None:
        self.model = model
        self.lookahead_frames = check_lookahead_frames(model, lookahead_frames)
        self.state: StreamState | None = None
        self.codebooks: int | None = None  # EnCodec codes per frame, fixed by the bandwidth
        # One step at a time: pushes from two threads at once would interleave their updates of the
        # carried state and lose audio. With the lock they run one after the other, in the order they
        # take it (the caller orders its frames).
        self._lock = threading.RLock()
        if model.kind == "encodec" and bandwidth_id is not None:
            bandwidth_id = inputs.one_bandwidth_id(bandwidth_id, model.bandwidths)
            self.codebooks = model.num_codebooks(bandwidth_id)
        # A backbone without AdaLayerNorm takes no bandwidth: its features decode as they come, as in decode.
        if model.kind != "encodec" or bandwidth_id is not None or not getattr(model.backbone, "adanorm", False):
            self.state = StreamState.start(model, bandwidth_id, self.lookahead_frames)

    @property
    def lookahead(self) -> Lookahead:
        """This stream's lookahead: the model's exact one, or the shorter one it was opened with."""
        return lookahead(self.model, self.lookahead_frames)

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """Feature frames ``(C, t)``, ``t >= 1`` -> the audio samples ``(S,)`` now out (possibly none): final
        ones, and for a low-latency stream the guessed ones its lookahead lets out."""
        if not isinstance(frames, torch.Tensor) or frames.dim() != 2 or frames.shape[1] == 0:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise InputError(f"frames: expected shape ({self.model.n_features}, t) with t >= 1, got {shape}")
        x = inputs.check_features(frames.unsqueeze(0), self.model.n_features, "frames", self.model._dtype())
        with self._lock:
            return decode_steps(self.model, [self._state()], [x[0]], [False])[0]

    def push_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """EnCodec codes ``(K, t)`` -> the audio samples now out, as :meth:`push`; K fixes the bandwidth on
        the first call when none was given, and must stay the same."""
        fe = self.model._require_encodec()
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2:  # check_codes would also offer (K, B, L)
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise InputError(f"codes: expected shape (K, t), got {shape}")
        k = inputs.check_codes(codes, fe.num_q, ENCODEC_BINS).shape[0]
        with self._lock:
            if self.codebooks is None:  # the first codes fix the bandwidth
                bandwidth_id = self.model.bandwidth_id_for_codebooks(k)
                if self.state is None:
                    self.state = StreamState.start(self.model, bandwidth_id, self.lookahead_frames)
                self.codebooks = k
            if k != self.codebooks:
                raise InputError(f"codes: this stream's bandwidth uses {self.codebooks} codebooks, got {k}")
            return self.push(self.model.codes_to_features(codes)[0])

    def flush(self) -> torch.Tensor:
        """End the stream: its remaining samples ``(S,)``."""
        empty = torch.zeros(self.model.n_features, 0)
        with self._lock:
            return decode_steps(self.model, [self._state()], [empty], [True])[0]

    def _state(self) -> StreamState:
        if self.state is None:
            raise InputError("this EnCodec stream has no bandwidth yet: pass bandwidth_id or push codes first")
        return self.state
