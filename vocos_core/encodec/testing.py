"""Random EnCodec 24 kHz weights in the official file format, for tests and benchmarks.

The official checkpoint cannot be downloaded in tests, so they load a file with the same keys and
shapes. Codebooks are drawn from the random encoder's own residuals, so codes depend on the input
audio the way they do with real weights (a codebook of unrelated random vectors would map almost every
frame to the same few codes).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .conv import WeightNormConv1d
from .model import EncodecEncoder

# A few decoder tensors with their official names and shapes; the loader must ignore them.
_DECODER_SAMPLE = {
    "decoder.model.0.conv.conv.weight_g": (512, 1, 1),
    "decoder.model.0.conv.conv.weight_v": (512, 128, 7),
    "decoder.model.0.conv.conv.bias": (512,),
}


def _uniform(shape: torch.Size | tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def _init_encoder(model: EncodecEncoder, gen: torch.Generator) -> None:
    """PyTorch-default-like init: conv weights U(+-1/sqrt(fan_in)) with g = ||v|| (plain conv at start)."""
    for module in model.encoder.modules():
        if isinstance(module, WeightNormConv1d):
            v = module.weight_v
            bound = 1 / math.sqrt(v.shape[1] * v.shape[2])
            v.copy_(_uniform(v.shape, bound, gen))
            module.weight_g.copy_(v.flatten(1).norm(dim=1).view(-1, 1, 1))
            module.bias.copy_(_uniform(module.bias.shape, bound, gen))
        elif isinstance(module, torch.nn.LSTM):
            for p in module.parameters():
                p.copy_(_uniform(p.shape, 1 / math.sqrt(module.hidden_size), gen))


def _probe_latents(model: EncodecEncoder, gen: torch.Generator) -> torch.Tensor:
    """Encoder outputs (N, 128) for 0.5 s of noise at each of eight loudness levels."""
    levels = torch.tensor([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0]).view(-1, 1)
    audio = torch.randn(len(levels), model.sample_rate // 2, generator=gen) * levels
    latents = model.encoder(audio.unsqueeze(1))  # (B, S) -> (B, 1, S) -> (B, 128, L)
    return latents.transpose(1, 2).reshape(-1, latents.shape[1])  # (B, 128, L) -> (B*L, 128)


def _init_codebooks(model: EncodecEncoder, gen: torch.Generator) -> None:
    """Each stage's codewords = jittered samples of what the previous stages left unquantized."""
    residual = _probe_latents(model, gen)
    bins = model.bins
    for stage in model.quantizer.vq.stages():
        book = stage._codebook
        picks = torch.randint(0, residual.shape[0], (bins,), generator=gen)
        # Jitter of 0.6 per-dimension std: less lets later stages collapse onto copies of the probe
        # frames (their residual goes to ~0 and every new input maps to one code); more blurs stage 0.
        jitter = torch.randn(bins, residual.shape[1], generator=gen) * residual.std(dim=0) * 0.6
        book.embed.copy_(residual[picks] + jitter)
        codes = book.quantize(residual)
        book.cluster_size.copy_(torch.bincount(codes, minlength=bins).float() + 1.0)
        book.embed_avg.copy_(book.embed * book.cluster_size[:, None])
        book.inited.fill_(1.0)
        residual = residual - book.embed[codes]


def random_encodec_state_dict(seed: int = 0, *, include_decoder: bool = False) -> dict[str, torch.Tensor]:
    """A random ``encodec_24khz`` state dict: every ``encoder.*`` and ``quantizer.*`` key of the official
    file, plus a few ``decoder.*`` keys when ``include_decoder`` (the real file has them)."""
    gen = torch.Generator().manual_seed(seed)
    model = EncodecEncoder()
    with torch.no_grad():
        _init_encoder(model, gen)
        _init_codebooks(model, gen)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if include_decoder:
        state.update({k: torch.randn(shape, generator=gen) for k, shape in _DECODER_SAMPLE.items()})
    return state


def write_random_encodec_weights(
    path: str | os.PathLike[str], seed: int = 0, *, include_decoder: bool = False
) -> Path:
    """Write :func:`random_encodec_state_dict` to ``path`` with ``torch.save``; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_encodec_state_dict(seed, include_decoder=include_decoder), out)
    return out


# A near-tie: the two codewords' squared distances to the residual differ by at most this fraction of
# the frame's latent |z|^2 plus the codewords' |e|^2. Float32 rounding moves the latent (the encoder's
# sums) and every residual after it by amounts proportional to |z|, so that is the scale. The near-ties
# that flipped between an AVX-512 and an AVX2 machine (the reference's own code on both) were 3e-8 and
# 8e-11 of it.
TIE_RTOL = 1e-6


def codes_differing_beyond_ties(encoder: EncodecEncoder, audio: torch.Tensor, codes: torch.Tensor,
                                expected: torch.Tensor, rtol: float = TIE_RTOL) -> tuple[list[str], int]:
    """Compare ``codes`` (ours) with ``expected`` (another machine's), both ``(n_q, B, L)``, for ``audio``
    ``(B, S)``: returns (the disagreements that are not near-ties, each described; the near-ties).

    Codes can only be identical across CPUs up to near-ties: the nearest codeword is found with float32
    sums whose order differs between machines. At a frame's first differing stage both codewords must be
    (nearly) equally near the residual our earlier stages left; its later stages quantize a different
    residual there, so they are not compared.
    """
    assert codes.shape == expected.shape, (codes.shape, expected.shape)
    stages = encoder.quantizer.vq.stages()[: codes.shape[0]]
    with torch.inference_mode():
        residual = encoder.encoder(audio.unsqueeze(1)).double()  # (B, S) -> (B, 1, S) -> (B, 128, L)
    latent_size = residual.pow(2).sum(1)  # (B, L): |z|^2
    same = torch.ones(codes.shape[1:], dtype=torch.bool)  # (B, L): frames equal at every stage so far
    beyond, ties = [], 0
    for level, stage in enumerate(stages):
        embed = stage._codebook.embed.double()  # (bins, 128)
        for item, frame in (same & (codes[level] != expected[level])).nonzero().tolist():
            x = residual[item, :, frame]
            a, b = embed[codes[level, item, frame]], embed[expected[level, item, frame]]
            gap = abs(float((x - a).pow(2).sum() - (x - b).pow(2).sum()))
            scale = float(latent_size[item, frame] + max(a.pow(2).sum(), b.pow(2).sum()))
            if gap <= rtol * scale:
                ties += 1
            else:
                beyond.append(f"stage {level}, item {item}, frame {frame}: distance gap {gap / scale:.1e} of scale")
        same &= codes[level] == expected[level]
        residual = residual - embed[codes[level]].transpose(1, 2)  # (B, L, 128) -> (B, 128, L)
    return beyond, ties
