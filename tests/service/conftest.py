"""Fixtures of the service tests: tiny random checkpoints, loaded models, and running apps."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

# With --import-mode=importlib no test folder is on sys.path; the tests import `service_helpers`.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_helpers import AppFactory, AppHarness, running_app

from service.models import ServedModel, load_models
from service.settings import Settings


@pytest.fixture(scope="session")
def base_settings(mel_checkpoint: Path, encodec_checkpoint: Path, encodec_weights: Path) -> Settings:
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


@pytest.fixture
def make_app(base_settings: Settings, models: dict[str, ServedModel]) -> AppFactory:
    """``async with make_app(max_batch_size=1, models={...}) as h:`` -> a started app and its client."""

    def factory(models_override: dict[str, ServedModel] | None = None, wait_ready: bool = True,
                **overrides: Any) -> AbstractAsyncContextManager[AppHarness]:
        settings = Settings(**{**base_settings.model_dump(), **overrides})
        return running_app(settings, models if models_override is None else models_override, wait_ready)

    return factory


@pytest_asyncio.fixture
async def app(make_app: AppFactory) -> AsyncIterator[AppHarness]:
    async with make_app() as harness:
        yield harness
