"""The FastAPI application: ``create_app(settings)`` wires models, engines, routes, metrics and errors.

Lifespan: load the models (unless given), start one batching engine per model, warm them up in the
background (``/readyz`` answers 503 until done), and on shutdown drain: stop accepting, finish what
is queued and running, then stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import numpy as np
import torch
from fastapi import FastAPI

from service import __version__
from service.engine import OpenStreams
from service.engine.torch_thread import run_in_torch_thread
from service.http.auth import BearerAuth
from service.http.errors import install_error_handlers
from service.http.middleware import RequestContextMiddleware
from service.http.openapi import declare_bearer_auth
from service.http.pages import router as pages_router
from service.http.routes import router
from service.http.state import ServiceState
from service.http.websocket import router as stream_router
from service.runtime.metrics import ServiceMetrics
from service.runtime.models import ServedModel, load_models
from service.runtime.registry import ModelSpec
from service.runtime.slot import ModelSlot, stream_policy
from service.settings import ANY_ORIGIN, Settings

log = logging.getLogger(__name__)

DESCRIPTION = """Vocos neural vocoder as a service: mel spectrograms, EnCodec tokens or audio files in,
mono audio out at the model's rate (or `sample_rate`). `GET /models` lists the served models; pick one
with `model=`. Concurrent requests are batched dynamically; each request's audio equals its decode
alone to within 1e-5 (relative). Bodies are JSON or `.npy` (`application/x-npy`); when API keys are configured,
send `Authorization: Bearer <key>` to every endpoint except `/healthz` and `/readyz` (in `/docs`:
enter the key in the bar at the top, or under "Authorize"). A playground that resynthesizes an uploaded or
recorded clip is at `/`."""


def create_app(settings: Settings, models: Mapping[str, ServedModel] | None = None) -> FastAPI:
    """The app for ``settings``; ``models`` (name -> loaded model) skips loading, e.g. in tests."""
    metrics = ServiceMetrics()
    state = ServiceState(settings=settings, metrics=metrics, auth=BearerAuth(settings.api_key_list))
    preloaded = dict(models) if models is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = preloaded if preloaded is not None else await run_in_torch_thread(load_models, settings)
        await start_engines(state, loaded)
        warm_task = asyncio.create_task(warm_up(state), name="warm-up")
        try:
            yield
        finally:
            warm_task.cancel()
            await shut_down(state)

    # docs_url/redoc_url off: FastAPI's pages load Swagger UI and ReDoc from a CDN; service.http.pages
    # serves them from installed files instead.
    # redirect_slashes=False: Starlette answered /decode/mel/ with an empty 307 to an http:// Location (wrong behind
    # a TLS proxy, and not followed by curl); the 404 names the path without the slash instead.
    app = FastAPI(title="vocos-serve", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, redirect_slashes=False)
    app.state.service = state
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(stream_router)
    app.include_router(pages_router)
    declare_bearer_auth(app, settings)
    # Request ids, keys, limits, the access log; CORS inside it (service.http.cors).
    app.add_middleware(RequestContextMiddleware, state=state)
    if settings.cors_origin_list == (ANY_ORIGIN,):
        log.warning("VOCOS_CORS_ORIGINS=*: pages of every site may call the API from their visitors' browsers "
                    "(docs/deployment.md#browsers-on-other-origins)")
    return app


async def start_engines(state: ServiceState, models: Mapping[str, ServedModel]) -> None:
    """One slot (engine and audio-analysis worker) per served model, with the batching options of the spec it
    was loaded from, the app's settings filling in those it leaves out (models given to ``create_app`` by tests
    may have no spec: the app's settings then)."""
    open_streams = OpenStreams()  # all models run in one model thread: a stream of one is held up by all
    for name, served in models.items():
        spec = (served.spec.with_batching_of(state.settings) if served.spec is not None
                else ModelSpec(name, served.source).resolved(state.settings))
        state.slots[name] = await ModelSlot.start(served, spec, state.metrics, stream_policy(state.settings),
                                                  open_streams)
        state.metrics.set_model(name, served.kind, served.public_name, str(served.device), served.dtype,
                                served.cpu_matmul)
    state.metrics.watch_devices(str(m.device) for m in models.values())
    log.info("serving models: %s", ", ".join(f"{n} ({m.kind})" for n, m in models.items()) or "none")


async def warm_up(state: ServiceState) -> None:
    """Run every model once through its engine, its stream steps (every row-count bucket, on CPU) and its
    audio path (when available), then mark the app ready: an audio path still unavailable (no EnCodec
    weights) fails its requests, not readiness."""
    try:
        for name, slot in state.slots.items():
            served, engine = slot.served, slot.engine
            frames = max(served.min_frames, 16)
            # One call at a time: the queue may hold a single request (VOCOS_MAX_QUEUE_SIZE=1).
            if served.bandwidths:
                for i, k in enumerate(served.codebooks):
                    await engine.submit(torch.zeros(k, frames, dtype=torch.long), bandwidth_id=i, observed=False)
            else:
                await engine.submit(torch.zeros(served.n_features, frames), observed=False)
            if hasattr(served, "warm_up_steps"):
                await run_in_torch_thread(served.warm_up_steps, engine.stream_policy.max_step_frames)
            if not served.audio_path.available:
                log.info("warm-up: skipped the %s audio-in path, unavailable until its weights load", name)
                continue
            # 2 s: longer than one of the EnCodec encoder's chunks (1.3 s), so that its time per sample, the
            # wait list's first estimate, is not mostly a short call's fixed costs (0.1 s made it 6 times too long).
            silence = np.zeros(2 * served.sample_rate, dtype=np.float32)
            bandwidth_id = 0 if served.bandwidths else None
            await slot.features.run(served.analysis, silence, bandwidth_id, size=silence.size)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("warm-up failed")
        # The public /readyz says what failed, not the exception's text (it may hold server paths).
        state.not_ready_reason = f"warm-up failed ({type(exc).__name__}); the server's log has the details"
        return
    state.set_ready()
    log.info("models warmed up; ready")


async def shut_down(state: ServiceState) -> None:
    """Drain every engine until the drain deadline, then release the worker threads."""
    if not await state.finish_drain():
        log.warning("drain timeout of %.1f s passed; unfinished requests were failed", state.settings.drain_timeout_s)
    for slot in state.slots.values():
        slot.features.close()
    await state.json_parser.close()
