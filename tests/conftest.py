"""Shared fixtures: paths to reference data, tiny random checkpoints, and service settings and models on them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.runtime.models import ServedModel, load_models
from service.settings import Settings
from vocos_core import matmul_ways
from vocos_core.encodec.testing import write_random_encodec_weights
from vocos_core.testing import write_random_checkpoint

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = DATA / "reference"
# The 89 MB random EnCodec weights stay out of git; the shared reference folder sits beside the clone.
SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
SHARED_ENCODEC_WEIGHTS = SHARED_REFERENCE / "encodec_24khz-random.th"


@pytest.fixture(autouse=True)
def _no_vocos_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings come from the test alone, never from VOCOS_* variables of the shell running pytest."""
    for name in list(os.environ):
        if name.startswith("VOCOS_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(autouse=True)
def _float32_matmul_precision() -> Iterator[None]:
    """Every test starts with PyTorch's own float32 matmuls (vocos_core.matmul_ways "mkl", at PyTorch's
    default precision), and leaves them so: the server's start-up probe may set another way."""
    matmul_ways.set_way("mkl")
    yield
    matmul_ways.set_way("mkl")


@pytest.fixture(scope="session")
def encodec_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random EnCodec 24 kHz weights in the official format (the real file is never downloaded)."""
    return write_random_encodec_weights(tmp_path_factory.mktemp("encodec-weights") / "encodec_24khz.th")


@pytest.fixture(scope="session")
def mel_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("mel"), "mel", dim=32, num_layers=1)


@pytest.fixture(scope="session")
def encodec_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("encodec"), "encodec", dim=32, num_layers=1)


@pytest.fixture(scope="session")
def shared_encodec_weights() -> Path:
    if not SHARED_ENCODEC_WEIGHTS.is_file():
        pytest.skip(f"EnCodec reference weights not found at {SHARED_ENCODEC_WEIGHTS} (kept out of git)")
    return SHARED_ENCODEC_WEIGHTS


@pytest.fixture(scope="session")
def base_settings(mel_checkpoint: Path, encodec_checkpoint: Path, encodec_weights: Path) -> Settings:
    """Service settings for both tiny models on CPU (the service and reliability tests start from these)."""
    with pytest.MonkeyPatch.context() as patch:  # session scope: runs before the autouse cleaner
        for name in [n for n in os.environ if n.startswith("VOCOS_")]:
            patch.delenv(name)
        return Settings(
            mel_model=str(mel_checkpoint),
            encodec_model=str(encodec_checkpoint),
            encodec_weights=str(encodec_weights),
            device="cpu",
            max_wait_ms=2,
        )


@pytest.fixture(scope="session")
def models(base_settings: Settings) -> dict[str, ServedModel]:
    """Both models, loaded once per session (apps share them; engines are per app)."""
    return load_models(base_settings)
