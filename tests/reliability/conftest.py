"""Fixtures of the reliability tests: tiny random models, apps in process and behind real uvicorn."""

from __future__ import annotations

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

from service_helpers import AppHarness, LiveServer, live_server, running_app, settings_with

from service.runtime.models import ServedModel
from service.settings import Settings

InProcessFactory = Callable[..., AbstractAsyncContextManager[AppHarness]]
LiveFactory = Callable[..., AbstractAsyncContextManager[LiveServer]]


def _factory(run: Callable[[Settings, dict[str, ServedModel]], Any], base_settings: Settings,
             shared: dict[str, ServedModel]) -> Callable[..., Any]:
    """``factory(models=None, **overrides)`` -> ``run(settings with the overrides, models or the shared ones)``."""

    def factory(models: dict[str, ServedModel] | None = None, **overrides: Any) -> Any:
        return run(settings_with(base_settings, **overrides), shared if models is None else models)

    return factory


@pytest.fixture
def make_app(base_settings: Settings, models: dict[str, ServedModel]) -> InProcessFactory:
    """``async with make_app(models={...}, max_batch_size=1) as h:`` -> a started app and its ASGI client."""
    return _factory(running_app, base_settings, models)


@pytest.fixture
def make_live(base_settings: Settings, models: dict[str, ServedModel]) -> LiveFactory:
    """``async with make_live(models={...}, ...) as s:`` -> the app behind uvicorn on 127.0.0.1."""
    return _factory(live_server, base_settings, models)
