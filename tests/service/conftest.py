"""Fixtures of the service tests: tiny random checkpoints, loaded models, and running apps."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fastapi.testclient import TestClient

# With --import-mode=importlib no test folder is on sys.path; the tests import `service_helpers`.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_helpers import AppFactory, AppHarness, running_app, settings_with

from service.http.app import create_app
from service.runtime.models import ServedModel
from service.settings import Settings


@pytest.fixture
def make_app(base_settings: Settings, models: dict[str, ServedModel]) -> AppFactory:
    """``async with make_app(max_batch_size=1, models={...}) as h:`` -> a started app and its client."""

    def factory(models_override: dict[str, ServedModel] | None = None, wait_ready: bool = True,
                **overrides: Any) -> AbstractAsyncContextManager[AppHarness]:
        settings = settings_with(base_settings, **overrides)
        return running_app(settings, models if models_override is None else models_override, wait_ready)

    return factory


@pytest_asyncio.fixture
async def app(make_app: AppFactory) -> AsyncIterator[AppHarness]:
    async with make_app() as harness:
        yield harness


@pytest.fixture
def client_for(base_settings: Settings, models: dict[str, ServedModel]) -> Iterator[Callable[..., TestClient]]:
    """``client_for(max_streams=1)`` -> a started app's synchronous test client (its WebSocket client too)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(settings_with(base_settings, **overrides), models))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
