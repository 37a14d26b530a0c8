"""Layers of the Vocos backbones, with the reference's attribute names (checkpoints load strictly).

Every layer that mixes neighbouring frames takes an optional ``mask`` ``(B, T)`` (True on real
frames). Zeroing padded frames before each such convolution reproduces the zero padding an item
sees when it runs alone, which is what makes batching of unequal lengths exact.
"""

from __future__ import annotations

import torch
from torch import nn

from . import bf16x3, matmul_ways
from .channels_last import depthwise_conv_btc

# Frames per MLP block: 1024 rows x 1536 intermediate floats = 6 MiB; the fastest of the block sizes
# timed (docs/performance.md). Smaller blocks leave the two threads' matmul shares too thin.
MLP_CHUNK_ROWS = 1024


def apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero padded frames of ``(B, C, T)`` activations; a no-op without a mask."""
    return x if mask is None else x.masked_fill(~mask[:, None, :], 0.0)


def masked_rows(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Indices of the masked frames of a ``(B, T)`` mask in the ``(B * T, C)`` rows of activations.

    Found once per backbone pass: ``nonzero`` waits for the device, so not once per block.
    """
    return None if mask is None else (~mask).reshape(-1).nonzero().squeeze(1)


def zero_rows_(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """Zero rows of ``(B, T, C)`` activations (flat frame indices) in place, touching those rows only."""
    if rows is not None:
        x.view(-1, x.shape[-1]).index_fill_(0, rows, 0.0)
    return x


class AdaLayerNorm(nn.Module):
    """LayerNorm whose scale and shift are looked up by a conditioning id (the EnCodec bandwidth)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.dim = embedding_dim
        self.scale = nn.Embedding(num_embeddings, embedding_dim)
        self.shift = nn.Embedding(num_embeddings, embedding_dim)

    def forward(self, x: torch.Tensor, cond_embedding_id: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` with ids ``(1,)``, ``(B,)`` (per item) or ``(1, T)`` (per frame) -> ``(B, T, C)``."""
        if cond_embedding_id.numel() == 1:
            # One id for the whole batch: layer_norm applies scale and shift in the same pass.
            i = cond_embedding_id.reshape(())
            return nn.functional.layer_norm(x, (self.dim,), self.scale.weight[i], self.shift.weight[i], self.eps)
        if x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu":
            return self._fused_per_id(x, cond_embedding_id)
        scale = self.scale(cond_embedding_id)  # (B, C), or (1, T, C) per frame
        shift = self.shift(cond_embedding_id)
        if cond_embedding_id.dim() == 1:
            scale, shift = scale.unsqueeze(1), shift.unsqueeze(1)  # (B, 1, C): one row per item
        return torch.addcmul(shift, nn.functional.layer_norm(x, (self.dim,), eps=self.eps), scale)

    def _fused_per_id(self, x: torch.Tensor, cond_embedding_id: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` with ids ``(B,)`` or ``(1, T)`` in bfloat16/float16 on CPU -> ``(B, T, C)``: each id's
        rows through the fused layer_norm, as a batch of one id computes them. Normalising, rounding to the half
        dtype, then scaling (above) is off by an ulp on a few values, which the backbone grows: a batched item
        or a stream would not equal its own decode. (On a GPU the per-id lookups would wait for the device.)"""
        row_ids = (cond_embedding_id[:, None] if cond_embedding_id.dim() == 1 else cond_embedding_id)
        row_ids = row_ids.expand(x.shape[:-1]).reshape(-1)  # (B * T,): each row's id
        ids = row_ids.unique().tolist()
        if len(ids) == 1:
            return nn.functional.layer_norm(x, (self.dim,), self.scale.weight[ids[0]], self.shift.weight[ids[0]],
                                            self.eps)
        rows = x.reshape(-1, self.dim)  # (B * T, C)
        out = torch.empty_like(rows)
        for i in ids:
            where = (row_ids == i).nonzero().squeeze(1)
            out.index_copy_(0, where, nn.functional.layer_norm(rows.index_select(0, where), (self.dim,),
                                                              self.scale.weight[i], self.shift.weight[i], self.eps))
        return out.view(x.shape)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, (Ada)LayerNorm, pointwise MLP with GELU, layer scale, residual.

    Works on ``(B, T, C)`` activations throughout (the reference transposes to ``(B, C, T)`` for the
    depthwise conv and back in every block); see :mod:`vocos_core.channels_last` for why.
    """

    def __init__(self, dim: int, intermediate_dim: int, adanorm_num_embeddings: int | None = None) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.adanorm = adanorm_num_embeddings is not None
        self.norm: nn.Module
        if adanorm_num_embeddings is not None:
            self.norm = AdaLayerNorm(adanorm_num_embeddings, dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        # The reference always creates gamma (its default layer scale 1 / num_layers is positive).
        self.gamma = nn.Parameter(torch.ones(dim))

    @property
    def padding(self) -> int:
        """Frames the depthwise conv reaches either side; ``forward`` pads by exactly this."""
        return int(self.dwconv.padding[0])

    def _bias(self) -> torch.Tensor:
        assert self.dwconv.bias is not None
        return self.dwconv.bias

    def forward(self, x: torch.Tensor, cond_embedding_id: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, C)`` -> ``(B, T, C)``; ``x`` is left as it was."""
        if matmul_ways.autograd_path(x):
            return self.differentiable_forward(x, cond_embedding_id, mask)
        return self.residual_update_(x.clone(), MLPWorkspace(x, self.pwconv1.out_features), cond_embedding_id,
                                     masked_rows(mask))

    def residual_update_(self, x: torch.Tensor, workspace: MLPWorkspace, cond_embedding_id: torch.Tensor | None = None,
                         padding_rows: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`forward` adding the block's output to ``x`` ``(B, T, C)`` in place; returns ``x``;
        ``padding_rows`` are the mask's :func:`masked_rows`.

        The backbone owns its residual stream, so it updates it in place, and all blocks share the
        MLP's scratch rows: fewer fresh multi-MB tensors, each of which costs page faults on CPU
        (glibc returns large freed blocks to the kernel). Identical output; the speed-up is in
        docs/performance.md.
        """
        # Masked frames (padding, or the gaps between packed items) feed no output frame but
        # through this convolution, so zeroing them in the stream itself is enough.
        h = depthwise_conv_btc(zero_rows_(x, padding_rows), self.dwconv.weight, self._bias(), padding=self.padding)
        return self.mlp_update_(x, h, workspace, cond_embedding_id)

    def mlp_update_(self, x: torch.Tensor, h: torch.Tensor, workspace: MLPWorkspace,
                    cond_embedding_id: torch.Tensor | None = None) -> torch.Tensor:
        """The block after its depthwise conv: ``x += gamma * mlp(norm(h))`` in place, both ``(B, T, C)``,
        ``h`` the conv's output for the frames of ``x``; returns ``x``. The streaming decoder
        (:mod:`vocos_core.streaming`) computes ``h`` from carried context and calls this."""
        h = self.norm(h, cond_embedding_id) if self.adanorm else self.norm(h)
        rows_h, rows_x = h.view(-1, h.shape[-1]), x.view(-1, x.shape[-1])
        # The MLP acts on each frame alone, so it runs over blocks of rows whose (rows, intermediate)
        # activation stays in cache between the two matmuls, in buffers shared by all blocks.
        for start in range(0, rows_h.shape[0], MLP_CHUNK_ROWS):
            end = min(start + MLP_CHUNK_ROWS, rows_h.shape[0])
            hidden, out = workspace.hidden[: end - start], workspace.out[: end - start]
            workspace.linear_gelu_into(self.pwconv1, rows_h[start:end], hidden)  # exact (erf) GELU, as nn.GELU()
            workspace.linear_into(self.pwconv2, hidden, out)
            rows_x[start:end].addcmul_(self.gamma, out)  # x + gamma * mlp(h)
        return x

    def differentiable_forward(self, x: torch.Tensor, cond_embedding_id: torch.Tensor | None = None,
                               mask: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`forward` without in-place updates or ``out=`` matmuls, which autograd cannot
        differentiate nor autocast cast: the path training takes (``vocos_core.training``)."""
        h = depthwise_conv_btc(apply_mask(x.transpose(1, 2), mask).transpose(1, 2), self.dwconv.weight, self._bias(),
                               padding=self.padding)  # masking wants (B, C, T): transposed views, no copies
        h = self.norm(h, cond_embedding_id) if self.adanorm else self.norm(h)
        h = self.pwconv2(nn.functional.gelu(self.pwconv1(h)))
        return x + self.gamma * h


class MLPWorkspace:
    """Scratch rows for the ConvNeXt MLP: ``hidden`` ``(R, intermediate)`` and ``out`` ``(R, C)``,
    R = min(B * T, MLP_CHUNK_ROWS); made once per backbone pass and reused by every block.

    Decides once per pass which way the MLP's matmuls run (:mod:`vocos_core.matmul_ways`), and for
    bf16x3 holds the kernels' scratch for the split inputs too.
    """

    def __init__(self, x: torch.Tensor, intermediate_dim: int) -> None:
        rows = min(x.shape[0] * x.shape[1], MLP_CHUNK_ROWS)
        self.hidden = x.new_empty(rows, intermediate_dim)
        self.out = x.new_empty(rows, x.shape[-1])
        self.way = matmul_ways.way_for(x, rows)
        self.scratch: torch.Tensor | None = None
        if self.way == "bf16x3":
            size = bf16x3.scratch_size(rows, max(intermediate_dim, x.shape[-1]))
            self.scratch = torch.empty(size, dtype=torch.int16)

    def linear_into(self, layer: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out[:] = layer(x)``, ``x`` ``(R, K)`` -> ``out`` ``(R, N)``."""
        matmul_ways.linear_into(self.way, layer, x, out, self.scratch)

    def linear_gelu_into(self, layer: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out[:] = gelu(layer(x))``, ``x`` ``(R, K)`` -> ``out`` ``(R, N)``."""
        matmul_ways.linear_gelu_into(self.way, layer, x, out, self.scratch)


def probe_layers(model: nn.Module) -> list[matmul_ways.ProbeLayer]:
    """``model``'s float32 linear layers for :func:`matmul_ways.choose`, each with whether the model
    applies the GELU to its output (a ConvNeXt block's ``pwconv1``)."""
    gelu = {id(m.pwconv1) for m in model.modules() if isinstance(m, ConvNeXtBlock)}
    return [(m, id(m) in gelu) for m in model.modules()
            if isinstance(m, nn.Linear) and m.weight.dtype == torch.float32]


class WeightNormConv1d(nn.Module):
    """Conv1d stored as weight norm (``weight_g``, ``weight_v``), as ``torch.nn.utils.weight_norm`` saves it.

    The deprecated ``weight_norm`` hook is not used; the weight is recomputed from g and v with the
    same formula (norm over every dimension but the output channels).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.dilation = dilation
        self.padding = padding
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.normal_(self.weight_v, std=0.02)

    def weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T)`` -> ``(B, C_out, T)`` (with 'same' padding)."""
        return nn.functional.conv1d(x, self.weight(), self.bias, dilation=self.dilation, padding=self.padding)


class ResBlock1(nn.Module):
    """HiFi-GAN style residual block: three dilated conv pairs with leaky ReLU and layer scale."""

    def __init__(self, dim: int, kernel_size: int = 3, dilation: tuple[int, int, int] = (1, 3, 5),
                 lrelu_slope: float = 0.1) -> None:
        super().__init__()
        self.lrelu_slope = lrelu_slope
        self.convs1 = nn.ModuleList(
            [WeightNormConv1d(dim, dim, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2)
             for d in dilation]
        )
        self.convs2 = nn.ModuleList(
            [WeightNormConv1d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilation]
        )
        # The reference creates these whenever a layer scale is set, which its backbone always does.
        self.gamma = nn.ParameterList([nn.Parameter(torch.ones(dim, 1)) for _ in dilation])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, T)``."""
        for c1, c2, gamma in zip(self.convs1, self.convs2, self.gamma, strict=True):
            xt = nn.functional.leaky_relu(apply_mask(x, mask), negative_slope=self.lrelu_slope)
            xt = nn.functional.leaky_relu(c1(xt), negative_slope=self.lrelu_slope)
            xt = c2(apply_mask(xt, mask))
            x = gamma * xt + x
        return x
