"""Fixtures of the reliability tests: tiny random models, apps in process and behind real uvicorn."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

# With --import-mode=importlib no test folder is on sys.path; these tests import their own helpers and
# the service tests' helpers (gated models, app harness).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_helpers import LiveServer, live_server, settings_with
from service_helpers import AppHarness, running_app

from service.models import ServedModel, load_models
from service.settings import Settings


@pytest.fixture(scope="session")
def reliability_settings(
    mel_checkpoint: Path, encodec_checkpoint: Path, encodec_weights: Path
) -> Settings:
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
def served_models(reliability_settings: Settings) -> dict[str, ServedModel]:
    """Both models, loaded once per session (apps share them; engines are per app)."""
    return load_models(reliability_settings)


InProcessFactory = Callable[..., AbstractAsyncContextManager[AppHarness]]
LiveFactory = Callable[..., AbstractAsyncContextManager[LiveServer]]


@pytest.fixture
def make_app(reliability_settings: Settings, served_models: dict[str, ServedModel]) -> InProcessFactory:
    """``async with make_app(models={...}, max_batch_size=1) as h:`` -> a started app and its ASGI client."""

    def factory(
        models: dict[str, ServedModel] | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[AppHarness]:
        settings = settings_with(reliability_settings, **overrides)
        return running_app(settings, served_models if models is None else models)

    return factory


@pytest.fixture
def make_live(reliability_settings: Settings, served_models: dict[str, ServedModel]) -> LiveFactory:
    """``async with make_live(models={...}, ...) as s:`` -> the app behind uvicorn on 127.0.0.1."""

    def factory(
        models: dict[str, ServedModel] | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[LiveServer]:
        settings = settings_with(reliability_settings, **overrides)
        return live_server(settings, served_models if models is None else models)

    return factory
