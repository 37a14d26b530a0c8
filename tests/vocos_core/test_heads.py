"""The ISTFT head's spectrum: our vectorised polar form against ``torch.polar``."""

from __future__ import annotations

import pytest
import torch

from vocos_core.heads import polar


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 7, 513), (3, 938, 513)])
def test_polar_matches_torch_polar(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    mag = torch.exp(torch.randn(shape, generator=gen))
    phase = 10 * torch.randn(shape, generator=gen)  # several turns either way
    ours, expected = polar(mag, phase), torch.polar(mag, phase)
    assert ours.dtype == torch.complex64 and ours.shape == shape
    # Both are float32 mag * cos / sin; they may round the last bit differently.
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6 * float(mag.max()))


def test_polar_takes_strided_halves_of_one_tensor() -> None:
    """The head passes the two halves of its linear layer's output: views with a row stride of 2F."""
    out = torch.randn(2, 5, 2 * 9, generator=torch.Generator().manual_seed(1))
    mag, phase = out.chunk(2, dim=-1)
    assert not mag.is_contiguous()
    torch.testing.assert_close(polar(mag, phase), torch.polar(mag.contiguous(), phase.contiguous()),
                               rtol=1e-6, atol=1e-6)
