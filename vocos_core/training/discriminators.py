"""The GAN discriminators of the Vocos recipe: multi-period (HiFi-GAN) and multi-resolution (DAC).

Same layers, maths and attribute names as vocos 0.1.0's ``vocos.discriminators``, so their state
dicts are interchangeable (weight norm stored as ``weight_g`` / ``weight_v``, as
``torch.nn.utils.weight_norm`` saves it). Both optionally take a conditioning id (the EnCodec
bandwidth) through a learned embedding that starts at zero.
"""

from __future__ import annotations

import torch
from torch import nn

# Outputs and feature maps of each sub-discriminator, for real and for generated audio.
DiscriminatorOutputs = tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]], list[list[torch.Tensor]]]
LRELU_SLOPE = 0.1
DEFAULT_PERIODS = (2, 3, 5, 7, 11)
DEFAULT_FFT_SIZES = (2048, 1024, 512)
DEFAULT_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


class WeightNormConv2d(nn.Module):
    """Conv2d stored as weight norm (``weight_g`` ``(C_out, 1, 1, 1)``, ``weight_v``), norm over all
    dimensions but the output channels, initialised as ``weight_norm(nn.Conv2d(...))`` would be."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)  # its default init
        self.stride, self.padding = stride, padding
        weight = conv.weight.detach()
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(weight, dim=(1, 2, 3), keepdim=True))
        self.weight_v = nn.Parameter(weight.clone())
        assert conv.bias is not None
        self.bias = nn.Parameter(conv.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H', W')``."""
        return nn.functional.conv2d(x, self.weight(), self.bias, self.stride, self.padding)


def _conditioning(emb: nn.Embedding | None, cond_embedding_id: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Projection of the last hidden map ``(B, C, H, W)`` on the id's embedding -> ``(B, 1, H, W)``, or 0."""
    if emb is None or cond_embedding_id is None:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    e = emb(cond_embedding_id)  # (1, C): one id for the whole batch, as the reference
    return (e.view(1, -1, 1, 1) * x).sum(dim=1, keepdim=True)


class DiscriminatorP(nn.Module):
    """Looks at audio folded into ``(S / period, period)`` with 2-D convolutions along time."""

    def __init__(self, period: int, in_channels: int = 1, kernel_size: int = 5, stride: int = 3,
                 lrelu_slope: float = LRELU_SLOPE, num_embeddings: int | None = None) -> None:
        super().__init__()
        self.period = period
        self.lrelu_slope = lrelu_slope
        chans = [in_channels, 32, 128, 512, 1024, 1024]
        strides = [stride, stride, stride, stride, 1]
        self.convs = nn.ModuleList(
            [WeightNormConv2d(cin, cout, (kernel_size, 1), (s, 1), (kernel_size // 2, 0))
             for cin, cout, s in zip(chans[:-1], chans[1:], strides, strict=True)]
        )
        self.emb: nn.Embedding | None = None
        if num_embeddings is not None:
            self.emb = nn.Embedding(num_embeddings, 1024)
            nn.init.zeros_(self.emb.weight)
        self.conv_post = WeightNormConv2d(1024, 1, (3, 1), (1, 1), (1, 0))

    def forward(self, x: torch.Tensor, cond_embedding_id: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Audio ``(B, S)`` -> scores ``(B, N)`` and feature maps (all layers but the first)."""
        x = x.unsqueeze(1)  # (B, 1, S)
        if x.shape[-1] % self.period:  # reflect-pad to a whole number of periods
            x = nn.functional.pad(x, (0, self.period - x.shape[-1] % self.period), "reflect")
        x = x.view(x.shape[0], 1, x.shape[-1] // self.period, self.period)  # (B, 1, S / p, p)
        fmap = []
        for i, conv in enumerate(self.convs):
            x = nn.functional.leaky_relu(conv(x), self.lrelu_slope)
            if i > 0:
                fmap.append(x)
        h = _conditioning(self.emb, cond_embedding_id, x)
        # The reference adds h in place after storing the map, so its last feature map includes h.
        x = self.conv_post(x) + h
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`DiscriminatorP` per period."""

    def __init__(self, periods: tuple[int, ...] = DEFAULT_PERIODS, num_embeddings: int | None = None) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([DiscriminatorP(p, num_embeddings=num_embeddings) for p in periods])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor,
                bandwidth_id: torch.Tensor | None = None) -> DiscriminatorOutputs:
        """Real ``y`` and generated ``y_hat`` ``(B, S)`` -> (real scores, generated scores, real maps,
        generated maps), one entry per sub-discriminator."""
        return _run_both(self.discriminators, y, y_hat, bandwidth_id)


class SpectrogramWindow(nn.Module):
    """Holds the Hann window under ``spec_fn.window``, where torchaudio's ``Spectrogram`` keeps it."""

    window: torch.Tensor

    def __init__(self, length: int) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(length))


class DiscriminatorR(nn.Module):
    """Looks at the complex STFT (real and imaginary parts as two channels), split into frequency bands."""

    def __init__(self, window_length: int, num_embeddings: int | None = None, channels: int = 32,
                 hop_factor: float = 0.25, bands: tuple[tuple[float, float], ...] = DEFAULT_BANDS) -> None:
        super().__init__()
        self.window_length = window_length
        self.hop_factor = hop_factor
        self.hop_length = int(window_length * hop_factor)
        self.spec_fn = SpectrogramWindow(window_length)
        n_bins = window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        self.band_convs = nn.ModuleList([self._band_stack(channels) for _ in self.bands])
        self.emb: nn.Embedding | None = None
        if num_embeddings is not None:
            self.emb = nn.Embedding(num_embeddings, channels)
            nn.init.zeros_(self.emb.weight)
        self.conv_post = WeightNormConv2d(channels, 1, (3, 3), (1, 1), (1, 1))

    @staticmethod
    def _band_stack(channels: int) -> nn.ModuleList:
        return nn.ModuleList([
            WeightNormConv2d(2, channels, (3, 9), (1, 1), (1, 4)),
            WeightNormConv2d(channels, channels, (3, 9), (1, 2), (1, 4)),
            WeightNormConv2d(channels, channels, (3, 9), (1, 2), (1, 4)),
            WeightNormConv2d(channels, channels, (3, 9), (1, 2), (1, 4)),
            WeightNormConv2d(channels, channels, (3, 3), (1, 1), (1, 1)),
        ])

    def spectrogram(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Audio ``(B, S)`` -> per band ``(B, 2, T, F_band)``, after removing DC and peak-normalising to 0.8."""
        x = x - x.mean(dim=-1, keepdim=True)
        x = 0.8 * x / (x.abs().max(dim=-1, keepdim=True)[0] + 1e-9)
        spec = torch.stft(x, self.window_length, hop_length=self.hop_length, win_length=self.window_length,
                          window=self.spec_fn.window, center=True, pad_mode="reflect", normalized=False,
                          onesided=True, return_complex=True)  # (B, F, T)
        spec = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, F, T, 2) -> (B, 2, T, F)
        return [spec[..., lo:hi] for lo, hi in self.bands]

    def forward(self, x: torch.Tensor, cond_embedding_id: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Audio ``(B, S)`` -> scores ``(B, 1, T, F')`` and feature maps."""
        fmap = []
        outs = []
        for band, stack in zip(self.spectrogram(x), self.band_convs, strict=True):
            assert isinstance(stack, nn.ModuleList)
            for i, layer in enumerate(stack):
                band = nn.functional.leaky_relu(layer(band), LRELU_SLOPE)
                if i > 0:
                    fmap.append(band)
            outs.append(band)
        h_in = torch.cat(outs, dim=-1)  # bands side by side along frequency
        h = _conditioning(self.emb, cond_embedding_id, h_in)
        out = self.conv_post(h_in) + h  # as DiscriminatorP: the last map includes h
        fmap.append(out)
        return out, fmap


class MultiResolutionDiscriminator(nn.Module):
    """One :class:`DiscriminatorR` per STFT window length."""

    def __init__(self, fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES, num_embeddings: int | None = None) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([DiscriminatorR(w, num_embeddings=num_embeddings) for w in fft_sizes])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor,
                bandwidth_id: torch.Tensor | None = None) -> DiscriminatorOutputs:
        """As :meth:`MultiPeriodDiscriminator.forward`."""
        return _run_both(self.discriminators, y, y_hat, bandwidth_id)


def _run_both(discriminators: nn.ModuleList, y: torch.Tensor, y_hat: torch.Tensor,
              bandwidth_id: torch.Tensor | None) -> DiscriminatorOutputs:
    real, gen, fmap_real, fmap_gen = [], [], [], []
    for d in discriminators:
        score_r, maps_r = d(y, cond_embedding_id=bandwidth_id)
        score_g, maps_g = d(y_hat, cond_embedding_id=bandwidth_id)
        real.append(score_r)
        gen.append(score_g)
        fmap_real.append(maps_r)
        fmap_gen.append(maps_g)
    return real, gen, fmap_real, fmap_gen
