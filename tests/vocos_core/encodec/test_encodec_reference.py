"""Codes of our encoder + quantizer against codes the reference EnCodec produced from the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vocos_core.encodec import EncodecEncoder, load_encodec_encoder
from vocos_core.encodec.testing import codes_differing_beyond_ties

BANDWIDTHS = (1.5, 3.0, 6.0, 12.0)


@pytest.fixture(scope="module")
def reference_encoder(reference_dir: Path) -> EncodecEncoder:
    return load_encodec_encoder(reference_dir / "encodec_24khz-random.th")


@pytest.fixture(scope="module")
def cases(reference_dir: Path) -> dict[str, np.ndarray]:
    with np.load(reference_dir / "vocos-encodec-tiny.cases.npz") as data:
        return {k: data[k] for k in data.files if k == "audio_in" or k.startswith("encodec_codes")}


@pytest.mark.parametrize("bandwidth_id", range(len(BANDWIDTHS)))
def test_codes_identical_to_reference_up_to_near_ties(
    reference_encoder: EncodecEncoder, cases: dict[str, np.ndarray], bandwidth_id: int
) -> None:
    """Identical wherever the reference's choice was not a float32 near-tie (which CPUs round apart:
    on an AVX2 machine the reference itself flips two codes of the fixture made on AVX-512)."""
    expected = torch.from_numpy(cases[f"encodec_codes_of_audio_in_bw{bandwidth_id}"])
    audio = torch.from_numpy(cases["audio_in"])
    codes = reference_encoder.encode(audio, BANDWIDTHS[bandwidth_id])
    assert codes.dtype == torch.int64
    assert codes.shape == expected.shape
    beyond, ties = codes_differing_beyond_ties(reference_encoder, audio, codes, expected)
    assert not beyond, f"codes differ from the reference beyond near-ties: {beyond}"
    frames = expected.shape[1] * expected.shape[2]
    assert ties <= frames // 50, f"{ties} near-ties in {frames} frames: more than float32 rounding explains"


def test_a_code_off_a_tie_is_reported(reference_encoder: EncodecEncoder, cases: dict[str, np.ndarray]) -> None:
    expected = torch.from_numpy(cases["encodec_codes_of_audio_in_bw3"])
    audio = torch.from_numpy(cases["audio_in"])
    codes = reference_encoder.encode(audio, 12.0).clone()
    codes[0, 0, 10] = (codes[0, 0, 10] + 1) % reference_encoder.bins
    beyond, _ = codes_differing_beyond_ties(reference_encoder, audio, codes, expected)
    assert len(beyond) == 1 and beyond[0].startswith("stage 0, item 0, frame 10:")


def test_codebook_is_concatenation_of_checkpoint_embeddings(
    reference_encoder: EncodecEncoder, reference_dir: Path
) -> None:
    state = torch.load(reference_dir / "encodec_24khz-random.th", weights_only=True, map_location="cpu")
    expected = torch.cat([state[f"quantizer.vq.layers.{i}._codebook.embed"] for i in range(16)])
    book = reference_encoder.codebook(16)
    assert book.shape == (16 * 1024, 128)
    assert torch.equal(book, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_codes_agree_with_reference(reference_dir: Path, cases: dict[str, np.ndarray]) -> None:
    # GPU kernels round differently from the CPU reference, so near-ties may flip: require near-agreement.
    encoder = load_encodec_encoder(reference_dir / "encodec_24khz-random.th", map_location="cuda")
    expected = torch.from_numpy(cases["encodec_codes_of_audio_in_bw3"])
    codes = encoder.encode(torch.from_numpy(cases["audio_in"]), 12.0)
    assert codes.device.type == "cuda"
    assert float((codes.cpu() == expected).float().mean()) >= 0.99
