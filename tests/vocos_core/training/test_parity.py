"""Our discriminators and losses against vocos 0.1.0's, on the fixture of scripts/make_training_fixtures.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vocos_core.training.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from vocos_core.training.loss import DiscriminatorLoss, FeatureMatchingLoss, GeneratorLoss, MelSpecReconstructionLoss

from .training_helpers import ROOT, fixture_script

FIXTURE = ROOT / "tests" / "data" / "training" / "parity.pt"
RTOL = 1e-5
# Our float32 run against the float64 reference: float32 rounding alone. The largest measured is
# 1.1e-4, on an MPD score 30 times smaller than its layer's input (cancellation); a wrong layer is O(1).
FLOAT32_RTOL = 1e-3


SCRIPT = fixture_script("make_training_fixtures")


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    return torch.load(FIXTURE, weights_only=False)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str, rtol: float = RTOL) -> None:
    """Relative to the reference tensor's largest magnitude: ``max|a - b| <= rtol * max|b|``."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    scale = ref.abs().max().clamp_min(1e-12)
    err = float((ours.to(ref.dtype) - ref).abs().max() / scale)
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:g}"


CASES = {
    "mpd": lambda n: MultiPeriodDiscriminator(num_embeddings=n),
    "mrd": lambda n: MultiResolutionDiscriminator(num_embeddings=n),
}
NAMES = ["mpd", "mpd_cond", "mrd", "mrd_cond"]


def run_discriminator(fixture: dict[str, Any], name: str, dtype: torch.dtype) -> tuple[Any, ...]:
    """Our discriminator of case ``name`` with the fixture's weights, in ``dtype``, on the fixture's
    audio: ``(real scores, generated scores, real maps, generated maps)``."""
    cond = name.endswith("_cond")
    disc = CASES[name.split("_")[0]](SCRIPT.NUM_EMBEDDINGS if cond else None)
    assert sorted(disc.state_dict().keys()) == fixture["cases"][name]["state_dict_keys"]
    SCRIPT.fill_parameters(disc.to(dtype))
    bandwidth = torch.tensor([fixture["bandwidth_id"]]) if cond else None
    with torch.no_grad():
        return disc(fixture["y"].to(dtype), fixture["y_hat"].to(dtype), bandwidth_id=bandwidth)


def assert_discriminator_close(fixture: dict[str, Any], name: str, outputs: tuple[Any, ...], rtol: float) -> None:
    """Scores and every feature map's sample against the reference's."""
    ref = fixture["cases"][name]
    real, gen, fmap_r, fmap_g = outputs
    for i, (ours, theirs) in enumerate(zip(real + gen, ref["real"] + ref["gen"], strict=True)):
        assert_close(ours, theirs, f"{name} score {i}", rtol)
    for side, ours_maps, ref_maps in (("real", fmap_r, ref["fmap_real"]), ("gen", fmap_g, ref["fmap_gen"])):
        assert [[tuple(m.shape) for m in maps] for maps in ours_maps] == [list(s) for s in ref["fmap_shapes"]]
        for i, (ours_d, ref_d) in enumerate(zip(ours_maps, ref_maps, strict=True)):
            for j, (m, r) in enumerate(zip(ours_d, ref_d, strict=True)):
                assert_close(SCRIPT.fmap_sample(m), r, f"{name} {side} fmap {i}.{j}", rtol)


@pytest.mark.parametrize("name", NAMES)
def test_discriminator_and_gan_losses_match_reference(fixture: dict[str, Any], name: str) -> None:
    """In float64 on both sides (the fixture's dtype), so the comparison sees the code, not the CPU."""
    assert fixture["y"].dtype == SCRIPT.DTYPE == torch.float64
    ref = fixture["cases"][name]
    outputs = run_discriminator(fixture, name, SCRIPT.DTYPE)
    assert_discriminator_close(fixture, name, outputs, RTOL)
    real, gen, fmap_r, fmap_g = outputs
    g_total, g_list = GeneratorLoss()(gen)
    d_total, d_real, d_gen = DiscriminatorLoss()(real, gen)
    fm = FeatureMatchingLoss()(fmap_r, fmap_g)
    ref_g, ref_d, ref_fm = ref["generator_loss"], ref["discriminator_loss"], ref["feature_matching_loss"]
    assert_close(g_total, ref_g[0], "generator loss")
    assert_close(torch.stack(g_list), torch.stack(ref_g[1]), "generator loss terms")
    assert_close(d_total, ref_d[0], "discriminator loss")
    assert_close(torch.stack(d_real + d_gen), torch.stack(ref_d[1] + ref_d[2]), "discriminator loss terms")
    assert_close(fm, ref_fm, "feature matching loss")


@pytest.mark.parametrize("name", NAMES)
def test_float32_discriminator_is_the_reference_up_to_float32_rounding(fixture: dict[str, Any], name: str) -> None:
    """Training runs in float32: the float32 path computes the same function (within its rounding)."""
    assert_discriminator_close(fixture, name, run_discriminator(fixture, name, torch.float32), FLOAT32_RTOL)


def test_mel_reconstruction_loss_matches_reference(fixture: dict[str, Any]) -> None:
    assert fixture["mel"], "fixture holds no mel losses"
    for (sr, n_fft, hop, n_mels), ref in fixture["mel"].items():
        loss = MelSpecReconstructionLoss(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels).to(SCRIPT.DTYPE)
        assert_close(loss(fixture["y_hat"], fixture["y"]), ref, f"mel loss at {sr} Hz")


def test_fixture_conditioning_is_not_zero(fixture: dict[str, Any]) -> None:
    """The conditional cases test the embedding path only if it moves the scores: zeroed, it must not match."""
    disc = MultiPeriodDiscriminator(num_embeddings=SCRIPT.NUM_EMBEDDINGS)
    SCRIPT.fill_parameters(disc.to(SCRIPT.DTYPE))
    with torch.no_grad():
        for d in disc.discriminators:
            d.emb.weight.zero_()
        real, *_ = disc(fixture["y"], fixture["y_hat"], bandwidth_id=torch.tensor([fixture["bandwidth_id"]]))
    ref = fixture["cases"]["mpd_cond"]["real"][0]
    assert float((real[0] - ref).abs().max() / ref.abs().max()) > 1e-3
