"""Streams in the batching engine: steps of concurrent streams of one model run as one batched call.

A stream (:class:`EngineStream`) pushes chunks of frames and awaits the audio each lets out (final, or
for a low-latency stream also guessed: ``vocos_core.streaming``). Steps waiting at the same time, one
per stream, form one call through the model's ``decode_steps``; their states are stacked inside it.
The engine runs stream steps before whole-utterance batches, and while streams are open it keeps each
whole-utterance call short enough (``StreamPolicy.max_step_wait_s``) that a step never waits long
behind one: a request too long for that is decoded as an internal stream, a bounded chunk per call,
between the steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from service.engine.errors import EngineStoppedError, StreamLimitError

if TYPE_CHECKING:
    from service.engine.engine import BatchingEngine


@dataclass(frozen=True)
class StreamPolicy:
    """Limits of an engine's streams.

    max_streams: streams open at once; beyond it ``open_stream`` refuses.
    max_wait_s: how long the oldest waiting step may wait for other streams' steps to join it.
    max_step_wait_s: the longest a step should wait behind a whole-utterance call; bounds those calls'
        frames by the measured seconds per frame while streams are open.
    max_step_frames: most frames of one stream in one step (longer pushes run over several calls).
    """

    max_streams: int = 64
    max_wait_s: float = 0.002
    max_step_wait_s: float = 0.05
    max_step_frames: int = 256

    def __post_init__(self) -> None:
        assert self.max_streams >= 1 and self.max_wait_s >= 0 and self.max_step_wait_s > 0
        assert self.max_step_frames >= 1


@dataclass(frozen=True)
class StreamStats:
    """One batched stream call, for metrics: streams stepped, their frames, compute seconds."""

    streams: int
    frames: int
    compute_s: float


class StreamModel(Protocol):
    """What the engine needs of a model for streams (``service.runtime.models.ServedModel``)."""

    def start_stream(self, bandwidth_id: int | None, lookahead_frames: int | None = None) -> Any: ...

    def decode_steps(self, states: Sequence[Any], chunks: Sequence[torch.Tensor],
                     final: Sequence[bool], guess: Sequence[bool] | None = None) -> list[torch.Tensor]: ...


@dataclass(eq=False)
class Step:
    """One stream's next chunk ``(C, t)`` (``t >= 0``) waiting for the model; ``final`` ends the stream;
    ``guess``: a low-latency stream may guess beyond it (no more of its push follows at once)."""

    state: Any
    chunk: torch.Tensor
    final: bool
    enqueued: float
    future: asyncio.Future[torch.Tensor] = field(repr=False)
    guess: bool = True

    @property
    def frames(self) -> int:
        return int(self.chunk.shape[-1])


class EngineStream:
    """An open stream of one engine: ``push`` chunks in order, the last with ``final=True``; ``close``
    always (it frees the stream's place; a stream closed early is dropped, its pending step unrun)."""

    def __init__(self, engine: BatchingEngine, request_id: str, lookahead_frames: int | None = None) -> None:
        self._engine = engine
        self.state: Any = None  # the model's stream state, from begin()
        self.request_id = request_id
        self.lookahead_frames = lookahead_frames
        self.opened = time.monotonic()
        self.closed = False
        self.finished = False

    async def push(self, chunk: torch.Tensor, *, final: bool = False, timeout: float | None = None,
                   step_frames: int | None = None) -> torch.Tensor:
        """Queue ``chunk`` ``(C, t)`` and return the audio ``(S,)`` it lets out; in order, one at a time, in
        steps of at most ``step_frames`` (default: the policy's ``max_step_frames``)."""
        if self.closed or self.finished:
            raise EngineStoppedError("this stream has ended; open a new one")
        pieces = []
        limit = step_frames or self._engine.stream_policy.max_step_frames
        starts = range(0, max(1, chunk.shape[-1]), limit)
        for start in starts:
            at_end = start == starts[-1]  # the push's last step: a low-latency stream guesses only here
            pieces.append(await self._engine.submit_step(self, chunk[..., start:start + limit], final and at_end,
                                                         timeout, guess=at_end))
        self.finished = final
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    @property
    def begun(self) -> bool:
        """Whether the model's state has started (:meth:`begin`)."""
        return self.state is not None

    def begin(self, bandwidth_id: int | None) -> None:
        """Start the model's state (once): at opening, or at the first chunk of a stream opened without it."""
        assert not self.begun, "a stream begins once"
        self.state = self._engine.stream_state(bandwidth_id, self.lookahead_frames)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._engine.release_stream(self)


class OpenStreams:
    """How many streams are open across the engines that share one model thread: a whole-utterance call
    of any of their models holds up the steps of all, so while any stream is open every engine keeps its
    calls short."""

    def __init__(self) -> None:
        self.count = 0


class StreamSlots:
    """The open streams of an engine and their waiting steps; ``shared`` counts them with other engines'."""

    def __init__(self, name: str, policy: StreamPolicy, shared: OpenStreams | None = None) -> None:
        self.name = name
        self.policy = policy
        self.shared = shared or OpenStreams()
        self.open: set[EngineStream] = set()
        self.steps: list[Step] = []
        self.last_call_end = 0.0  # time.monotonic() when the last batched step call returned

    def add(self, stream: EngineStream) -> None:
        self.open.add(stream)
        self.shared.count += 1

    def discard(self, stream: EngineStream) -> None:
        if stream in self.open:
            self.open.discard(stream)
            self.shared.count -= 1

    def call_frames(self, frame_seconds: float) -> int:
        """The most frames a whole-utterance call may hold while a stream is open anywhere: what runs in
        ``max_step_wait_s`` at ``frame_seconds``, at least 16 (below that a call costs mostly its fixed
        part: every weight read once, hundreds of small operators)."""
        return max(16, int(self.policy.max_step_wait_s / frame_seconds))

    def reserve(self, retry_after: float) -> None:
        if len(self.open) >= self.policy.max_streams:
            raise StreamLimitError(
                f"the {self.name} model has {self.policy.max_streams} streams open, its limit", retry_after
            )

    def ready(self, now: float) -> float | None:
        """Seconds until the waiting steps should run (0: now), or None when none waits.

        They wait for company up to ``max_wait_s`` from the later of the oldest one's arrival and the
        end of the last call: the streams that call answered need a moment to send their audio and
        submit their next steps, else the streams would split into groups that take turns, each
        waiting out the other's call.
        """
        live = [s for s in self.steps if not s.future.done()]
        if not live:
            return None
        streams_waiting = len({id(s.state) for s in live})
        if streams_waiting >= len(self.open):
            return 0.0  # every open stream has a step in: nobody else can join
        return max(0.0, self.policy.max_wait_s - (now - max(live[0].enqueued, self.last_call_end)))

    def take(self) -> list[Step]:
        """The next call's steps: the oldest waiting step of each stream."""
        batch: list[Step] = []
        seen: set[int] = set()
        rest: list[Step] = []
        for step in self.steps:
            if step.future.done():
                continue
            if id(step.state) in seen:
                rest.append(step)
            else:
                seen.add(id(step.state))
                batch.append(step)
        self.steps = rest
        return batch
