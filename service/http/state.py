"""What one running app holds: settings, models, their engines, metrics, and readiness."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field

from starlette.applications import Starlette

from service.echo import clip
from service.errors import InvalidInputError, InvalidParameterError, ModelNotLoadedError, ServerDrainingError
from service.http.auth import BearerAuth
from service.http.json_parser import JsonParser
from service.runtime.inflight import InflightBytes
from service.runtime.metrics import ServiceMetrics
from service.runtime.models import ServedModel
from service.runtime.slot import ModelSlot
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """Shared by the lifespan, the routes and the middleware of one app (``app.state.service``)."""

    settings: Settings
    metrics: ServiceMetrics
    auth: BearerAuth
    slots: dict[str, ModelSlot] = field(default_factory=dict)  # by model name, in the registry's order
    inflight: InflightBytes = field(init=False)
    json_parser: JsonParser = field(default_factory=JsonParser)
    ready: bool = False
    draining: bool = False
    not_ready_reason: str = "models are warming up"  # they load before the server listens
    drain_deadline: float = math.inf  # event-loop time at which unfinished requests get 503
    drain_expired: asyncio.Event = field(default_factory=asyncio.Event)  # set at the drain deadline
    _drain_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _stopping: set[asyncio.Future[bool]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.inflight = InflightBytes(self.settings.max_inflight_bytes)
        self.metrics.report_readiness(lambda: self.serving)

    @property
    def models(self) -> dict[str, ServedModel]:
        return {name: slot.served for name, slot in self.slots.items()}

    def model(self, name: str | None, kind: str | None = None, hint: str = "") -> ModelSlot:
        """The slot of served model ``name`` (None: the first of ``kind``; ``hint`` ends the message when there is
        none), for a new request.

        Raises ServerDrainingError once a drain began; ModelNotLoadedError (404) for a name not served,
        listing those that are; InvalidInputError when the model is not of the endpoint's ``kind``.
        """
        if self.draining:
            raise ServerDrainingError("the server is shutting down and accepts no new requests; retry elsewhere")
        if name is None:
            name = next((n for n, m in self.models.items() if m.kind == kind), None)
            if name is None:
                raise ModelNotLoadedError(
                    f"this server serves no {kind} model (served: {self._served_names()}); add one with VOCOS_MODELS "
                    f"or VOCOS_{str(kind).upper()}_MODEL{hint}"
                )
        served = self.served(name)
        if kind is not None and served.kind != kind:
            raise InvalidInputError(
                f"model {name!r} is of kind {served.kind}; this endpoint needs a model of kind {kind} "
                f"(served: {self._served_names()})"
            )
        return self.slots[name]

    def served(self, name: str) -> ServedModel:
        """Served model ``name``; ModelNotLoadedError, listing those that are, for a name not served."""
        if not name.strip():  # `?model=` left empty by a template: no model of that name could ever exist
            raise InvalidParameterError(f"model: got an empty name; name a served model ({self._served_names()}), "
                                        "or leave model out for the default")
        if name not in self.models:
            raise ModelNotLoadedError(f"no model named {clip(name)} on this server; served: {self._served_names()}")
        return self.models[name]

    def _served_names(self) -> str:
        return ", ".join(f"{n} ({m.kind})" for n, m in self.models.items()) or "none"

    @property
    def alive(self) -> bool:
        """Liveness: every batching loop runs (or was stopped on purpose by a drain)."""
        return self.draining or all(slot.engine.alive for slot in self.slots.values())

    @property
    def serving(self) -> bool:
        """Readiness (``/readyz``, ``vocos_ready``): warmed up, not draining, every batching loop running."""
        return self.ready and not self.draining and self.alive

    def set_ready(self) -> None:
        if not self.draining:
            self.ready = True
            self.not_ready_reason = ""

    def begin_drain(self) -> None:
        """Refuse new requests (503, and readiness 503); requests already received still finish.

        The engines keep accepting for ``drain_timeout_s``, so a request that arrived before the
        drain (still uploading or parsing) is not turned away half-way; then they stop, and whatever
        is still queued or computing is answered 503. Call it on the event loop (a signal handler
        schedules it with ``call_soon_threadsafe``); calling it again changes nothing.
        """
        if self.draining:
            return
        self.draining = True
        self.ready = False
        self.not_ready_reason = "draining: the server is shutting down"
        loop = asyncio.get_running_loop()
        self.drain_deadline = loop.time() + self.settings.drain_timeout_s
        self._drain_timer = loop.call_later(
            self.settings.drain_timeout_s, self._stop_engines,
            f"drain timeout of {self.settings.drain_timeout_s:g} s passed: unfinished requests get 503")
        # Apart from the engines' timer (cancelled once they are idle): streams waiting for their client's
        # next chunk are ended at the deadline too.
        loop.call_later(self.settings.drain_timeout_s, self.drain_expired.set)

    def end_drain(self) -> None:
        """End the drain now, as its deadline would (a second stop signal from an operator who will not
        wait): whatever is still queued or computing is answered 503, and open streams end with 503."""
        self.begin_drain()
        if self.drain_expired.is_set():
            return
        self.drain_deadline = asyncio.get_running_loop().time()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self._stop_engines("drain ended early by a second stop signal: unfinished requests get 503")
        self.drain_expired.set()

    async def finish_drain(self) -> bool:
        """Drain every engine until the drain deadline (begun now if no drain began); whether all finished."""
        self.begin_drain()
        remaining = max(0.0, self.drain_deadline - asyncio.get_running_loop().time())
        results = await asyncio.gather(*(slot.engine.drain(remaining) for slot in self.slots.values()))
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        return all(results)

    @property
    def open_streams(self) -> int:
        return sum(slot.engine.open_streams for slot in self.slots.values())

    async def streams_ended(self, poll_s: float = 0.05) -> None:
        """Return once no stream is open, or the drain deadline has passed (its streams then end with 503)."""
        loop = asyncio.get_running_loop()
        while self.open_streams and loop.time() < self.drain_deadline:
            await asyncio.sleep(poll_s)

    def _stop_engines(self, why: str) -> None:
        log.warning(why)
        for slot in self.slots.values():
            self._stopping.add(asyncio.ensure_future(slot.engine.drain(0)))


def state_of(app: Starlette) -> ServiceState:
    """The :class:`ServiceState` that ``create_app`` stored on ``app`` (``app.state.service``)."""
    state = app.state.service
    assert isinstance(state, ServiceState)
    return state
