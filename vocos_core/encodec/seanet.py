"""SEANet encoder of EnCodec 24 kHz: audio (B, 1, S) -> latent frames (B, 128, ceil(S / 320)).

Layer order and attribute names follow the official checkpoint (``encoder.model.<i>...``): ``model`` is
one ``nn.Sequential`` whose index ``i`` is part of every key, so activations (which have no weights) must
keep their slots.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import torch
from torch import nn

from ..steps import Steps, run_steps
from .conv import ChunkState, SConv1d

# Audio samples per chunk of the encoder (and per unit of its steps, layer by layer). A multiple of the
# hop (320) so that every strided conv sees whole windows: 100 latent frames. Its widest activation,
# 32 channels x 32000 samples x 4 bytes = 3.9 MiB, stays under the service's 8 MiB mmap threshold
# (service/runtime/memory.py); a whole 10 s signal makes 31 MB tensors, fresh pages at every layer. With
# chunks (and the copy-based reflect padding) resynthesis is faster than one whole-signal pass, with
# identical output (docs/performance.md), and memory no longer grows with the input's length.
# Chunks this long keep each layer wide enough (>= 100 frames) for oneDNN to pick the
# same kernels as for the whole signal; much shorter ones (e.g. 4800 samples) do not, and round
# differently.
CHUNK_SAMPLES = 32_000
# Chunks per span of the LSTM and last convolution, whose frames are final when it is done. oneDNN's
# LSTM costs a few ms per call on top of its frames (its weights are prepared anew each time): a call
# per chunk made a 10 s resynthesis about 8 % slower than one call for the whole signal. Four chunks
# are 400 frames (5.3 s of audio), about 50 ms of LSTM on 2 cores, in two units of a layer each.
TAIL_SPAN_CHUNKS = 4

# An LSTM's state between chunks: (h, c), each (num_layers, B, hidden).
LSTMState = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class SEANetConfig:
    """Hyperparameters of the SEANet encoder; defaults are those of the 24 kHz model."""

    channels: int = 1
    dimension: int = 128
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # upsampling order; the encoder applies them reversed
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    lstm_layers: int = 2
    elu_alpha: float = 1.0

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (320 for the 24 kHz model)."""
        return math.prod(self.ratios)


class SEANetResnetBlock(nn.Module):
    """``shortcut(x) + block(x)``: block = ELU, conv k=3 (dim -> dim/compress), ELU, conv k=1 (back to dim);
    shortcut = 1x1 conv (the checkpoint was trained without a true identity skip).

    Shapes: (B, dim, T) -> (B, dim, T).
    """

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int, elu_alpha: float) -> None:
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(alpha=elu_alpha),
            SConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(alpha=elu_alpha),
            SConv1d(hidden, dim, 1),
        )
        self.shortcut = SConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)

    def forward_chunk(self, x: torch.Tensor, states: dict[SConv1d, ChunkState]) -> torch.Tensor:
        """One time chunk of :meth:`forward` (see :meth:`SConv1d.forward_chunk`)."""
        elu1, conv1, elu2, conv2 = self.block
        assert isinstance(conv1, SConv1d) and isinstance(conv2, SConv1d) and isinstance(elu2, nn.ELU)
        h = conv1.forward_chunk(elu1(x), states[conv1])
        # In place: h is this block's own temporary, and ELU is elementwise.
        h = conv2.forward_chunk(nn.functional.elu(h, elu2.alpha, inplace=True), states[conv2])
        return self.shortcut.forward_chunk(x, states[self.shortcut]).add_(h)


class SLSTM(nn.Module):
    """Stacked LSTM over time with a residual connection. Shapes: (B, C, T) -> (B, C, T)."""

    def __init__(self, dimension: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)  # (B, C, T) -> (T, B, C): nn.LSTM is time-major by default
        y, _ = self.lstm(x)
        y = y + x
        return y.permute(1, 2, 0)  # (T, B, C) -> (B, C, T)

    def chunk_steps(self, x: torch.Tensor,
                    state: LSTMState | None) -> Generator[None, None, tuple[torch.Tensor, LSTMState]]:
        """One time chunk of :meth:`forward`, from the LSTM's state ``(h, c)`` at its start (None at the
        signal's start), a layer at a time, yielding after each: (B, C, t) -> ((B, C, t), the state at
        its end). The stacked LSTM runs its layers one after another too: the same arithmetic, to the bit
        (``tests/vocos_core/encodec/test_seanet.py``)."""
        lstm = self.lstm
        seq = x.permute(2, 0, 1)  # (B, C, t) -> (t, B, C): time-major, as in forward
        if state is None:
            zeros = seq.new_zeros(lstm.num_layers, seq.shape[1], lstm.hidden_size)
            state = (zeros, zeros)
        y, hs, cs = seq, [], []
        for i in range(lstm.num_layers):
            weights = [getattr(lstm, f"{name}_l{i}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            # nn.LSTM's own kernel, on one layer: (input, (h0, c0), weights, has_biases, num_layers,
            # dropout, train, bidirectional, batch_first) -> (output, h_n, c_n).
            y, h, c = torch.lstm(y, (state[0][i : i + 1], state[1][i : i + 1]), weights, True, 1, 0.0, False, False,
                                 False)
            hs.append(h)
            cs.append(c)
            yield
        return (y + seq).permute(1, 2, 0), (torch.cat(hs), torch.cat(cs))  # (t, B, C) -> (B, C, t)


def _build_layers(cfg: SEANetConfig) -> list[nn.Module]:
    """Layers in checkpoint order: conv, then per ratio (resblocks, ELU, strided conv), LSTM, ELU, conv."""
    width = cfg.n_filters
    layers: list[nn.Module] = [SConv1d(cfg.channels, width, cfg.kernel_size)]
    for ratio in reversed(cfg.ratios):
        for j in range(cfg.n_residual_layers):
            layers.append(
                SEANetResnetBlock(
                    width, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress, cfg.elu_alpha
                )
            )
        downsample = SConv1d(width, width * 2, kernel_size=ratio * 2, stride=ratio)
        layers += [nn.ELU(alpha=cfg.elu_alpha), downsample]
        width *= 2
    if cfg.lstm_layers:
        layers.append(SLSTM(width, cfg.lstm_layers))
    layers += [nn.ELU(alpha=cfg.elu_alpha), SConv1d(width, cfg.dimension, cfg.last_kernel_size)]
    return layers


class SEANetEncoder(nn.Module):
    """Causal SEANet encoder. Shapes: (B, channels, S) -> (B, dimension, ceil(S / hop_length))."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = nn.Sequential(*_build_layers(cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_steps(self.steps(x))

    def steps(self, x: torch.Tensor) -> Steps:
        """:meth:`forward` as :data:`~vocos_core.steps.Steps`: a unit per convolution layer of each chunk
        of :data:`CHUNK_SAMPLES`, and a unit per LSTM layer and one for the last convolution of each
        span of :data:`TAIL_SPAN_CHUNKS` chunks, whose frames (B, dimension, t) the last gives.

        Causal convolutions let each chunk be computed from the previous chunk's last few samples per
        convolution (see :meth:`SConv1d.forward_chunk`), and the LSTM each span from its state at the
        span's start, so a span's frames are final when it is done and equal those of one whole-signal pass.
        """
        split = self._tail_start()
        stack, tail = list(self.model)[:split], list(self.model)[split:]
        states = {m: ChunkState(m) for layer in self.model for m in layer.modules() if isinstance(m, SConv1d)}
        lstm_state: LSTMState | None = None
        pending = []
        for start, end in chunk_bounds(x.shape[-1], CHUNK_SAMPLES):
            h = x[..., start:end]
            if end == x.shape[-1]:
                for state in states.values():
                    state.last = True
            for layer in stack:
                h = _layer_chunk(layer, h, states)
                if not isinstance(layer, nn.ELU):
                    yield None
            pending.append(h)
            if len(pending) == TAIL_SPAN_CHUNKS or end == x.shape[-1]:
                lstm_state = yield from _tail_span(tail, torch.cat(pending, dim=-1), states, lstm_state)
                pending = []

    def _tail_start(self) -> int:
        """Index in ``model`` where the per-chunk convolution stack ends: the tail is (LSTM,) ELU, last conv."""
        return len(self.model) - (3 if self.cfg.lstm_layers else 2)


def chunk_bounds(length: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, end)`` of consecutive chunks of ``chunk`` samples covering ``length``; the remainder
    joins the last chunk (so it is ``chunk`` to ``2 * chunk - 1`` long) and a short input is one chunk.
    """
    full = max(1, length // chunk) - 1
    return [(i * chunk, (i + 1) * chunk) for i in range(full)] + [(full * chunk, length)]


def _tail_span(tail: list[nn.Module], h: torch.Tensor, states: dict[SConv1d, ChunkState],
               lstm_state: LSTMState | None) -> Generator[torch.Tensor | None, None, LSTMState | None]:
    """The tail's layers on one span of the stack's output ``(B, C, t)``, from the LSTM's state at its
    start: a unit per LSTM layer, then one for the ELU and last convolution, which gives the frames.
    Returns the LSTM's state at the span's end."""
    for layer in tail:
        if isinstance(layer, SLSTM):
            h, lstm_state = yield from layer.chunk_steps(h, lstm_state)
        else:
            h = _layer_chunk(layer, h, states)
    yield h
    return lstm_state


def _layer_chunk(layer: nn.Module, h: torch.Tensor, states: dict[SConv1d, ChunkState]) -> torch.Tensor:
    if isinstance(layer, SConv1d):
        return layer.forward_chunk(h, states[layer])
    if isinstance(layer, SEANetResnetBlock):
        return layer.forward_chunk(h, states)
    assert isinstance(layer, nn.ELU), type(layer)
    # In place: h is the previous layer's fresh output (the input audio never reaches an ELU first).
    return nn.functional.elu(h, layer.alpha, inplace=True)
