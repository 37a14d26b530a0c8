"""Checks on what callers pass in, raising :class:`InputError` with what was expected."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .errors import InputError


def check_features(x: object, channels: int, name: str = "features", dtype: torch.dtype | None = None) -> torch.Tensor:
    """Accept ``(B, C, T)`` real floating features with C == channels, T >= 1, all finite (and, given the
    ``dtype`` the model computes in, finite in it)."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor of shape (B, {channels}, T), got {type(x).__name__}")
    if x.dim() != 3:
        # (C, T) is what a TTS model hands over most often: say how to pass it.
        hint = f"; for one item ({channels}, T), pass {name}[None]" if x.dim() == 2 and x.shape[0] == channels else ""
        raise InputError(f"{name}: expected shape (B, {channels}, T), got {tuple(x.shape)}{hint}")
    _check_float(x, name)
    if x.shape[1] != channels:
        raise InputError(f"{name}: expected {channels} channels (dim 1), got {x.shape[1]}")
    if x.shape[0] == 0 or x.shape[2] == 0:
        raise InputError(f"{name}: empty input {tuple(x.shape)}; need at least one item and one frame")
    _check_finite(x, name, dtype)
    return x


def check_feature_list(items: Iterable[torch.Tensor], channels: int,
                       dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Accept a non-empty sequence (or any iterable) of ``(C, T_i)`` feature tensors (as :func:`check_features`)."""
    items = list(items)
    if len(items) == 0:
        raise InputError("features: expected at least one item")
    out = []
    for i, x in enumerate(items):
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"features[{i}]: expected shape ({channels}, T), got {shape}")
        out.append(check_features(x.unsqueeze(0), channels, f"features[{i}]", dtype)[0])
    return out


def check_audio(x: object, min_samples: int) -> torch.Tensor:
    """Accept ``(S,)`` or ``(B, S)`` real floating audio with at least ``min_samples`` samples, finite in
    float32 (the front-ends' dtype)."""
    if not isinstance(x, torch.Tensor) or x.dim() not in (1, 2):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"audio: expected a tensor of shape (B, samples) or (samples,), got {shape}")
    _check_float(x, "audio")
    if x.dim() == 2 and x.shape[0] == 0:
        raise InputError(f"audio: the batch is empty, shape {tuple(x.shape)}; expected (B, samples) with B >= 1")
    if x.numel() == 0 or x.shape[-1] < min_samples:
        raise InputError(f"audio: need at least {min_samples} samples, got {x.shape[-1]}")
    _check_finite(x, "audio", torch.float32)
    return x


def check_code_values(low: int, high: int, bins: int) -> None:
    """Codes whose least and greatest values are ``low`` and ``high`` must lie in ``[0, bins)``."""
    if low < 0 or high >= bins:
        raise InputError(f"codes must lie in [0, {bins}); found {low if low < 0 else high}")


def check_codes(codes: object, max_codebooks: int, bins: int) -> torch.Tensor:
    """Accept ``(K, L)`` or ``(K, B, L)`` integer codes in ``[0, bins)`` with 1 <= K <= max_codebooks."""
    if not isinstance(codes, torch.Tensor) or codes.dim() not in (2, 3):
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise InputError(f"codes: expected shape (K, L) or (K, B, L), got {shape}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise InputError(f"codes: expected an integer tensor, got {codes.dtype}")
    if codes.numel() == 0:
        raise InputError(f"codes: empty input {tuple(codes.shape)}")
    if not 1 <= codes.shape[0] <= max_codebooks:
        raise InputError(f"codes: expected 1..{max_codebooks} codebooks (dim 0), got {codes.shape[0]}")
    check_code_values(int(codes.min()), int(codes.max()), bins)
    return codes if codes.dim() == 3 else codes.unsqueeze(1)


def check_bandwidth_ids(ids: object, bandwidths: Sequence[float], batch: int) -> torch.Tensor:
    """Accept an int, or a tensor/sequence of ints of length 1 or ``batch``; return a ``(1 or B,)`` long tensor."""
    valid = ", ".join(f"{i} ({kbps:g} kbps)" for i, kbps in enumerate(bandwidths))
    if ids is None:
        raise InputError(f"bandwidth_id is required for this model; valid: {valid}")
    try:
        t = torch.as_tensor(ids) if not isinstance(ids, torch.Tensor) else ids
    except (TypeError, ValueError, RuntimeError):  # a string, None inside a list, ...
        raise InputError(f"bandwidth_id: expected an int or integer ids, got {ids!r:.60}; valid: {valid}") from None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"bandwidth_id: expected integers, got {t.dtype}; valid: {valid}")
    t = t.reshape(-1).long()
    if t.numel() not in (1, batch):
        raise InputError(f"bandwidth_id: expected 1 or {batch} ids, got {t.numel()}")
    if bool(((t < 0) | (t >= len(bandwidths))).any()):
        raise InputError(f"bandwidth_id {t.tolist()} out of range; valid: {valid}")
    return t


def one_bandwidth_id(bandwidth_id: object, bandwidths: Sequence[float]) -> int:
    """One bandwidth id, given as an int or a one-element tensor/sequence (as :func:`check_bandwidth_ids`)."""
    return int(check_bandwidth_ids(bandwidth_id, bandwidths, 1)[0])


def _check_float(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def _check_finite(x: torch.Tensor, name: str, dtype: torch.dtype | None = None) -> None:
    """Refuse NaN and Inf, and values that become Inf once cast to ``dtype`` (a float64 1e39 in a float32
    model), which would give NaN audio without an error."""
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name}: contains NaN or Inf")
    if dtype is None or torch.finfo(x.dtype).max <= torch.finfo(dtype).max:
        return  # every finite value of x's dtype is finite in dtype
    limit = torch.finfo(dtype).max
    low, high = torch.aminmax(x)
    if float(low) < -limit or float(high) > limit:
        raise InputError(f"{name}: holds {max(-float(low), float(high)):.3g}, beyond the range of {dtype} "
                         f"(±{limit:.3g}), which it is computed in; expected values within that range")
