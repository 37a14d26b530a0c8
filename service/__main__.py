"""``vocos-serve`` / ``python -m service``: settings from env and flags, load models, serve with uvicorn.

Models load before the port opens, so a model that cannot be obtained ends the process with one line
and exit status 1. SIGTERM starts a drain: readiness turns 503 and new requests are refused at once,
queued and running ones finish (up to VOCOS_DRAIN_TIMEOUT_S), then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError

from service.engine.torch_thread import hand_over_promptly, idle_within, torch_thread
from service.http.app import create_app
from service.http.server import GRACE_AFTER_DRAIN_S, bound_sockets, uvicorn_config
from service.http.state import ServiceState, state_of
from service.runtime.logs import configure_logging, stopping
from service.runtime.memory import bound_memory_growth
from service.runtime.models import StartupError, load_models
from service.settings import Settings, invalid_settings, unknown_variables

log = logging.getLogger("service")
# How often the server looks for a dead batching loop (DrainingServer._exit_when_a_loop_dies).
LOOP_WATCH_INTERVAL_S = 1.0


class _Parser(argparse.ArgumentParser):
    """argparse that answers a bad flag with its error line and a pointer to --help, not 30 lines of usage."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists every setting)\n")


def build_parser() -> argparse.ArgumentParser:
    """One flag per settings field (``--max-batch-size`` for ``VOCOS_MAX_BATCH_SIZE``); flags win over env."""
    parser = _Parser(
        prog="vocos-serve",
        description="Serve Vocos over HTTP. Every flag also reads from VOCOS_<NAME>.",
        argument_default=argparse.SUPPRESS,
        # A prefix of a flag was taken for it (--max-batch-s for --max-batch-size): a flag added later would make
        # a deployed command ambiguous, and a misspelt one could set another setting without a word.
        allow_abbrev=False,
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} (env VOCOS_{name.upper()}; default {_default_text(field.default)})"
        kind, choices = _flag_type(field.annotation)
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            # Choices in any case, as the variables take them (VOCOS_LOG_LEVEL=WARNING).
            parser.add_argument(flag, dest=name, type=str.lower if choices else kind, choices=choices, help=help_text)
    return parser


def _flag_type(annotation: Any) -> tuple[type, list[str] | None]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str, [str(a) for a in args]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if annotation in (int, float, bool):
        return annotation, None
    return str, None


def _default_text(value: object) -> str:
    return (
        "(set)"
        if isinstance(value, SecretStr) and value.get_secret_value()
        else repr("" if isinstance(value, SecretStr) else value)
    )


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the environment with the command line's flags on top; exits 2 on invalid values."""
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    try:
        return Settings(**flags)
    except ValidationError as exc:
        parser.error(invalid_settings(exc))


class DrainingServer(uvicorn.Server):
    """uvicorn with a drain that starts the moment SIGTERM arrives (readiness 503, engines refuse)."""

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self._state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: asyncio.Task[None] | None = None
        self.exit_status = 0

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except OSError as exc:  # the port was only bound during the load: another server took it meanwhile
            stopping(f"cannot listen on {self.config.host or '*'}:{self.config.port} (VOCOS_HOST, VOCOS_PORT): "
                     f"{exc.strerror or exc}")
            await self.lifespan.shutdown()
            sys.exit(1)
        if self.should_exit:
            return
        for sock in sockets or []:  # uvicorn names only the sockets it bound itself
            host, port = sock.getsockname()[:2]
            log.info("listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)
        self._watch = asyncio.create_task(self._exit_when_a_loop_dies(), name="batching-loop-watch")

    async def _exit_when_a_loop_dies(self) -> None:
        """A batching loop that died (a bug, a broken device) leaves its model answering 503 until a restart.
        Kubernetes' liveness probe restarts the pod; compose, systemd and ``docker run --restart`` restart
        only a process that exits, so the server drains (the other models' work finishes) and exits 1."""
        while not self.should_exit:
            if not self._state.alive:
                log.critical("a batching loop has stopped: draining, then exiting with status 1 to be restarted")
                self.exit_status = 1
                self._state.begin_drain()
                self.should_exit = True
                return
            await asyncio.sleep(LOOP_WATCH_INTERVAL_S)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, let open streams finish within the drain, then uvicorn's own shutdown
        (which would otherwise close every WebSocket at once, with 1012)."""
        self._state.begin_drain()  # already begun by the signal; sets the deadline otherwise
        for server in self.servers:
            server.close()
        await self._state.streams_ended()
        # uvicorn's limit runs from here: what is left of the drain plus the grace after it, so that the
        # whole shutdown stays within DRAIN_TIMEOUT_S + 5 s however long the streams took.
        left = max(0.0, self._state.drain_deadline - asyncio.get_running_loop().time())
        # uvicorn types it int; it hands it to asyncio.wait_for, which takes a float.
        self.config.timeout_graceful_shutdown = left + GRACE_AFTER_DRAIN_S  # type: ignore[assignment]
        await super().shutdown(sockets)

    async def _wait_tasks_to_complete(self) -> None:
        """uvicorn's wait for open connections, cut off GRACE_AFTER_DRAIN_S after the drain's end as it stands now:
        its own limit was set from the first signal's deadline, so after a second signal (``end_drain``) a client
        still uploading held the process for all of DRAIN_TIMEOUT_S. TimeoutError, as uvicorn's limit raises it:
        uvicorn then cancels the tasks left."""
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(super()._wait_tasks_to_complete())
        try:
            while not waiting.done():
                left = self._state.drain_deadline + GRACE_AFTER_DRAIN_S - loop.time()
                if left <= 0:
                    raise TimeoutError
                await asyncio.wait([waiting], timeout=min(left, 0.1))
        finally:
            waiting.cancel()  # a no-op once done
        waiting.result()

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            if not self.should_exit:
                log.info("signal %d: draining (readiness 503, finishing queued requests)", sig)
                self._loop.call_soon_threadsafe(self._state.begin_drain)
            else:  # as a second Ctrl-C ends any server at once: the operator will not wait for the drain
                log.info("signal %d again: ending the drain now", sig)
                self._loop.call_soon_threadsafe(self._state.end_drain)
        super().handle_exit(sig, frame)


def serve(app: FastAPI, settings: Settings, sockets: list[socket.socket] | None = None) -> int:
    """Run ``app`` until SIGTERM/SIGINT, draining for up to ``settings.drain_timeout_s``; on ``sockets`` (from
    :func:`~service.http.server.bound_sockets`) when given, else on those uvicorn binds. The exit status: 0, or 1
    when a batching loop died."""
    config = uvicorn_config(app, settings)
    # uvicorn re-raises the signal it caught once it has shut down; a quiet handler makes that a
    # normal return (exit status 0) instead of death by SIGTERM or a KeyboardInterrupt traceback.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server = DrainingServer(config, state_of(app))
    server.run(sockets=sockets)
    return server.exit_status


class _Stopped(BaseException):
    """A stop signal while the models load, which nothing in the load can be interrupted for."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_loading(signum: int, frame: types.FrameType | None) -> None:
    raise _Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    # Until serve() takes over: as PID 1 of a container (Kubernetes, docker run without --init) a signal
    # without a handler is ignored, so SIGTERM during a long load or download would wait for SIGKILL.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_loading)
    settings = parse_settings(argv)
    configure_logging(settings.log_level, settings.log_format)
    for warning in unknown_variables(os.environ):
        log.warning(warning)
    bound_memory_growth()  # before any model runs
    hand_over_promptly()
    sockets: list[socket.socket] = []
    try:
        sockets = bound_sockets(settings.host, settings.port)  # found now, not after minutes of loading models
        # In the model thread, where every later model call runs (service.engine.torch_thread).
        models = torch_thread().submit(load_models, settings).result()
    except StartupError as exc:
        for sock in sockets:
            sock.close()
        stopping(str(exc))
        return 1
    except (_Stopped, KeyboardInterrupt) as stop:  # the load cannot be interrupted: leave without it
        signum = stop.signum if isinstance(stop, _Stopped) else signal.SIGINT
        stopping(f"stopped by {signal.Signals(signum).name} while loading the models")
        logging.shutdown()
        os._exit(128 + signum)
    status = serve(create_app(settings, models), settings, sockets)
    if not idle_within(0.5):
        # A call the drain deadline gave up on (its requests were answered 503): Python would wait for it
        # at exit, past the shutdown the orchestrator allows (DRAIN_TIMEOUT_S + 5 s).
        log.warning("exiting without waiting for the model call still running")
        logging.shutdown()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
