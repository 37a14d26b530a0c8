from __future__ import annotations

from pathlib import Path

import pytest

from vocos_core.encodec.testing import write_random_encodec_weights

REFERENCE_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference"


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random encodec_24khz state dict (encoder + quantizer keys only), written once per session."""
    return write_random_encodec_weights(tmp_path_factory.mktemp("encodec") / "random.th", seed=0)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "encodec_24khz-random.th").is_file():
        pytest.skip(f"reference fixtures not found under {REFERENCE_DIR}")
    return REFERENCE_DIR
