"""What one running app holds: settings, models, their engines, metrics, and readiness."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from starlette.applications import Starlette

from service.auth import BearerAuth
from service.engine import BatchingEngine
from service.errors import ModelNotLoadedError, ServerDrainingError
from service.metrics import ServiceMetrics
from service.models import ServedModel
from service.settings import Settings
from service.workers import SerialWorker

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """Shared by the lifespan, the routes and the middleware of one app (``app.state.service``)."""

    settings: Settings
    metrics: ServiceMetrics
    auth: BearerAuth
    models: dict[str, ServedModel] = field(default_factory=dict)
    engines: dict[str, BatchingEngine] = field(default_factory=dict)
    feature_workers: dict[str, SerialWorker] = field(default_factory=dict)
    ready: bool = False
    draining: bool = False
    not_ready_reason: str = "models are loading"

    def model(self, kind: str) -> tuple[ServedModel, BatchingEngine]:
        """The served model ``kind`` and its engine for a new request.

        Raises ServerDrainingError once a drain began, ModelNotLoadedError when the model is disabled.
        """
        if self.draining:
            raise ServerDrainingError("the server is shutting down and accepts no new requests; retry elsewhere")
        if kind not in self.engines:
            loaded = ", ".join(sorted(self.engines)) or "none"
            raise ModelNotLoadedError(
                f"the {kind} model is not loaded on this server (loaded: {loaded}); "
                f"enable it with VOCOS_{kind.upper()}_MODEL"
            )
        return self.models[kind], self.engines[kind]

    @property
    def alive(self) -> bool:
        """Liveness: every batching loop runs (or was stopped on purpose by a drain)."""
        return self.draining or all(engine.alive for engine in self.engines.values())

    def set_ready(self) -> None:
        if not self.draining:
            self.ready = True
            self.not_ready_reason = ""
            self.metrics.set_ready(True)

    def begin_drain(self) -> None:
        """Refuse new requests (503, and readiness 503); requests already received still finish.

        The engines keep accepting until the lifespan's shutdown drains them, so a request that
        arrived before the drain (still uploading or parsing) is not turned away half-way. Call it on
        the event loop (a signal handler schedules it with ``call_soon_threadsafe``).
        """
        self.draining = True
        self.ready = False
        self.not_ready_reason = "draining: the server is shutting down"
        self.metrics.set_ready(False)


def state_of(app: Starlette) -> ServiceState:
    """The :class:`ServiceState` that ``create_app`` stored on ``app`` (``app.state.service``)."""
    state = app.state.service
    assert isinstance(state, ServiceState)
    return state
