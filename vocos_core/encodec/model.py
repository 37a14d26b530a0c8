"""EnCodec 24 kHz encoder + residual quantizer: 24 kHz audio -> discrete codes.

This is the part of EnCodec that Vocos needs for copy-synthesis: the encoder is applied to the whole
signal at once (the 24 kHz model has no segmenting and no loudness normalisation), and the quantizer
keeps as many codebooks as the bandwidth allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ENCODEC_24KHZ_BANDWIDTHS
from ..errors import InputError
from ..steps import Steps, mapped, run_steps
from .quantization import QuantizerConfig, ResidualVectorQuantizer
from .seanet import SEANetConfig, SEANetEncoder


@dataclass(frozen=True)
class EncodecConfig:
    """Hyperparameters of the EnCodec 24 kHz model (the official ``encodec_24khz`` checkpoint)."""

    sample_rate: int = 24_000
    bandwidths: tuple[float, ...] = ENCODEC_24KHZ_BANDWIDTHS
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    @property
    def frame_rate(self) -> int:
        """Latent frames per second (75)."""
        return math.ceil(self.sample_rate / self.seanet.hop_length)


class EncodecEncoder(nn.Module):
    """Encoder (``encoder.*`` checkpoint keys) + residual quantizer (``quantizer.*`` keys).

    Build it with :func:`vocos_core.encodec.load_encodec_encoder`; a bare instance holds
    uninitialised weights.
    """

    def __init__(self, cfg: EncodecConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or EncodecConfig()
        self.encoder = SEANetEncoder(self.cfg.seanet)
        self.quantizer = ResidualVectorQuantizer(self.cfg.quantizer)
        self.eval()

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def hop_length(self) -> int:
        return self.cfg.seanet.hop_length

    @property
    def frame_rate(self) -> int:
        return self.cfg.frame_rate

    @property
    def bins(self) -> int:
        return self.cfg.quantizer.bins

    @property
    def bandwidths(self) -> tuple[float, ...]:
        """Supported bandwidths in kbps."""
        return self.cfg.bandwidths

    def num_codebooks(self, bandwidth: float) -> int:
        """Codebooks used at ``bandwidth`` kbps: 1.5 -> 2, 3 -> 4, 6 -> 8, 12 -> 16, 24 -> 32."""
        if isinstance(bandwidth, bool) or bandwidth not in self.cfg.bandwidths:
            raise InputError(
                f"bandwidth must be one of {list(self.cfg.bandwidths)} kbps, got {bandwidth!r}"
            )
        return self.quantizer.num_quantizers(self.frame_rate, float(bandwidth))

    def codebook(self, n_q: int) -> torch.Tensor:
        """Embeddings of the first ``n_q`` codebooks, concatenated: (n_q * bins, dimension)."""
        total = self.cfg.quantizer.n_q
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= total:
            raise InputError(f"n_q must be an integer in 1..{total}, got {n_q!r}")
        return self.quantizer.codebook(n_q)

    def encode(self, audio: torch.Tensor, bandwidth: float) -> torch.Tensor:
        """Codes of ``audio`` at ``bandwidth`` kbps.

        Args:
            audio: (B, S) float mono audio at 24 kHz; moved to the encoder's device and dtype.
            bandwidth: one of :attr:`bandwidths`.

        Returns:
            (n_q, B, ceil(S / 320)) int64 codes in ``[0, bins)``, n_q = ``num_codebooks(bandwidth)``,
            on the encoder's device; an inference tensor (usable as an index, not modifiable in place).
        """
        steps = self.encode_steps(audio, bandwidth)
        with torch.inference_mode():
            return run_steps(steps)

    def encode_steps(self, audio: torch.Tensor, bandwidth: float) -> Steps:
        """:meth:`encode` as :data:`~vocos_core.steps.Steps`, the codes of each span of the encoder
        (``vocos_core.encodec.seanet``) as soon as it is done, to run in inference mode (or without
        gradients); ``audio`` and ``bandwidth`` are checked at once."""
        n_q = self.num_codebooks(bandwidth)  # validates before any compute
        _check_audio(audio)
        param = self.quantizer.vq.stages()[0]._codebook.embed
        x = audio.to(device=param.device, dtype=param.dtype).unsqueeze(1)  # (B, S) -> (B, 1, S)
        # The quantizer treats each frame alone: (B, 128, t) latents -> (n_q, B, t) codes, span by span.
        return mapped(self.encoder.steps(x), lambda latents: self.quantizer.vq.encode(latents, n_q))


def _check_audio(audio: object) -> None:
    if not isinstance(audio, torch.Tensor):
        raise InputError(f"audio must be a torch.Tensor of shape (B, S), got {type(audio).__name__}")
    if audio.dim() != 2:
        raise InputError(f"audio must have shape (B, S) (batch, samples), got {tuple(audio.shape)}")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise InputError(f"audio must hold at least one sample per item, got shape {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise InputError(f"audio must be a floating-point tensor, got {audio.dtype}")
    if not bool(torch.isfinite(audio).all()):
        raise InputError("audio contains NaN or Inf samples")
