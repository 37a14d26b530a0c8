"""Exact batching: each item of a padded batch equals its own unbatched output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vocos_core import Vocos
from vocos_core.testing import write_random_checkpoint

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
TOLERANCE = 1e-5
# Every test here runs once per CPU matmul way: mkl, onednn, bf16x3 (tests/vocos_core/conftest.py).
pytestmark = pytest.mark.usefixtures("matmul_way")


def assert_batch_matches_solo(model: Vocos, lengths: list[int], bandwidth_ids: list[int] | None) -> None:
    gen = torch.Generator().manual_seed(sum(lengths))
    features = [torch.randn(model.n_features, t, generator=gen) for t in lengths]
    batched = model.decode_batch(features, bandwidth_ids)
    assert len(batched) == len(features)
    for i, x in enumerate(features):
        bw = None if bandwidth_ids is None else torch.tensor([bandwidth_ids[i]])
        solo = model.decode(x[None], bandwidth_id=bw)[0]
        assert batched[i].shape == solo.shape == (model.num_samples(lengths[i]),)
        err = float((batched[i] - solo).abs().max() / solo.abs().max())
        assert err <= TOLERANCE, f"item {i} (T={lengths[i]}): relative error {err:.2e}"


# Lengths that differ by one frame, and by ten times.
LENGTH_SETS = [[40, 41, 39], [12, 120, 30, 7]]


@pytest.mark.parametrize("lengths", LENGTH_SETS)
@pytest.mark.parametrize("name", ["vocos-mel-tiny", "vocos-mel-tiny-same"])
def test_mel_batching_is_exact(name: str, lengths: list[int]) -> None:
    assert_batch_matches_solo(Vocos.from_pretrained(REFERENCE / name), lengths, None)


@pytest.mark.parametrize("lengths", LENGTH_SETS)
def test_encodec_batching_is_exact_with_mixed_bandwidths(lengths: list[int]) -> None:
    model = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny")
    assert_batch_matches_solo(model, lengths, [i % 4 for i in range(len(lengths))])


@pytest.mark.parametrize(("backbone", "head", "padding"), [
    ("resnet", "istft", "same"), ("convnext", "imdct_symexp", "center"), ("resnet", "imdct_cos", "same"),
])
def test_batching_is_exact_for_every_component(tmp_path: Path, backbone: str, head: str, padding: str) -> None:
    ckpt = write_random_checkpoint(tmp_path, "mel", num_layers=2, backbone=backbone,  # type: ignore[arg-type]
                                   head=head, padding=padding)  # type: ignore[arg-type]
    assert_batch_matches_solo(Vocos.from_pretrained(ckpt), [9, 90, 10], None)


def test_batch_of_equal_lengths_equals_batched_decode() -> None:
    model = Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny")
    x = torch.randn(3, 100, 25)
    batched = torch.stack(model.decode_batch(list(x)))
    assert torch.allclose(batched, model.decode(x), rtol=0, atol=TOLERANCE * float(batched.abs().max()))


def test_padding_cannot_leak_even_if_huge() -> None:
    # A short item next to a long one of huge values: any leak would swamp the short item's output.
    model = Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny")
    short = torch.randn(100, 8)
    long = torch.full((100, 80), 50.0)
    out = model.decode_batch([short, long])[0]
    solo = model.decode(short[None])[0]
    assert float((out - solo).abs().max() / solo.abs().max()) <= TOLERANCE


@pytest.mark.parametrize("bandwidth_ids", [[2, 2, 2], [0, 3, 1]])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_encodec_batching_is_exact_in_reduced_precision(dtype: torch.dtype, bandwidth_ids: list[int]) -> None:
    # Per-item AdaLayerNorm ids: normalising then scaling in the half dtype rounds twice, ~8e-3 off the solo decode.
    model = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny").to(dtype)
    assert_batch_matches_solo(model, [40, 41, 39], bandwidth_ids)
