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

from reliability_helpers import LiveServer, live_server
from service_helpers import AppHarness, running_app, settings_with

from service.models import ServedModel
from service.settings import Settings

InProcessFactory = Callable[..., AbstractAsyncContextManager[AppHarness]]
LiveFactory = Callable[..., AbstractAsyncContextManager[LiveServer]]


@pytest.fixture
def make_app(base_settings: Settings, models: dict[str, ServedModel]) -> InProcessFactory:
    """``async with make_app(models={...}, max_batch_size=1) as h:`` -> a started app and its ASGI client."""
    shared = models  # the factory's own ``models`` argument overrides them

    def factory(
        models: dict[str, ServedModel] | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[AppHarness]:
        settings = settings_with(base_settings, **overrides)
        return running_app(settings, shared if models is None else models)

    return factory


@pytest.fixture
def make_live(base_settings: Settings, models: dict[str, ServedModel]) -> LiveFactory:
    """``async with make_live(models={...}, ...) as s:`` -> the app behind uvicorn on 127.0.0.1."""
    shared = models  # the factory's own ``models`` argument overrides them

    def factory(
        models: dict[str, ServedModel] | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[LiveServer]:
        settings = settings_with(base_settings, **overrides)
        return live_server(settings, shared if models is None else models)

    return factory
