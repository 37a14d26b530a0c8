"""Whether a served model's audio-in path (``/resynthesize``) can run, and loading it once it can.

A mel model's path needs nothing beyond the model. An EnCodec model's needs the EnCodec encoder
weights (``encodec_24khz-d7cc33bc.th``), used by nothing else: the server starts without them, serves
``/decode/encodec``, and answers ``/resynthesize?model=encodec`` with 503 until they load. Each such
request retries, cheaply: at once when the weights file has appeared or changed since the last
failure (an init container, a mounted volume), otherwise at most every ``RETRY_INTERVAL_S`` (a
download of the official file, a file that did not load). One attempt runs at a time, off the event
loop; requests arriving meanwhile wait for it (up to their deadline) when it loads a file that is
there, and get their 503 at once when it downloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from pathlib import Path

from service.engine.torch_thread import run_in_torch_thread
from service.errors import AudioPathUnavailableError
from vocos_core import Vocos
from vocos_core.errors import UnavailableError, VocosError
from vocos_core.feature_extractors import EncodecFeatures

log = logging.getLogger(__name__)

RETRY_INTERVAL_S = 5.0
WEIGHTS_FILE = "encodec_24khz-d7cc33bc.th"
DEFAULT_WEIGHTS_SETTING = "VOCOS_ENCODEC_WEIGHTS (or --encodec-weights)"
# A model of VOCOS_MODELS(_FILE): the file's option for it comes before the server's setting.
NAMED_WEIGHTS_SETTING = "the model's encodec_weights option in VOCOS_MODELS_FILE, else VOCOS_ENCODEC_WEIGHTS,"
_now = time.monotonic  # the clock of the retry interval (a test sets its own)


class AudioPath:
    """The audio-in path of one model: ``available``, or ``problem`` says why not (for the server's log)."""

    def __init__(self, model: Vocos, name: str = "encodec", weights_setting: str = DEFAULT_WEIGHTS_SETTING) -> None:
        """``name``: the model's, as requests ask for it; ``weights_setting``: where its operator sets the
        weights file (for a model of the models file, its own option comes before the server's)."""
        fe = model.feature_extractor
        self.name, self.weights_setting = name, weights_setting
        self._features = fe if isinstance(fe, EncodecFeatures) else None
        self.problem: str | None = None
        self._tried_at = -math.inf
        self._failed_file: tuple[int, int] | None = None  # (mtime, size) of the file that failed
        self._attempt: asyncio.Future[bool] | None = None
        self._attempt_reads_file = False

    @property
    def available(self) -> bool:
        return self._features is None or self._features.encoder_loaded

    def load(self) -> bool:
        """Try to load the path now (blocking); whether it is available. A failure is kept in ``problem``."""
        if self._features is None or self._features.encoder_loaded:
            return True
        self._tried_at = _now()
        self._failed_file = _file_state(self._features.weights_path())
        try:
            self._features.encoder()
        except (VocosError, OSError) as exc:  # vocos_core's advice left out: the server words its own
            problem = exc.reason if isinstance(exc, UnavailableError) else str(exc)
            self.problem = " ".join(problem.split()) or type(exc).__name__
            return False
        self.problem = None
        log.info("EnCodec audio-in path loaded: /resynthesize?model=%s is available", self.name)
        return True

    def load_at_start(self) -> None:
        """Load now; when that fails, one WARNING says what is unavailable until when."""
        if not self.load():
            log.warning(
                "the EnCodec audio-in path of model %r (/resynthesize?model=%s) is unavailable until the EnCodec "
                "weights are present: %s. Set %s to a local %s; requests retry, no restart needed",
                self.name, self.name, self.problem, self.weights_setting, WEIGHTS_FILE,
            )

    async def require(self, timeout: float) -> None:
        """Return when the path can run; else AudioPathUnavailableError, after one more attempt to
        load it when one is due (waited for at most ``timeout`` seconds)."""
        if self.available:
            return
        if self._attempt is None and self._due():
            self._attempt = asyncio.ensure_future(run_in_torch_thread(self.load))
            self._attempt.add_done_callback(self._attempt_done)
            self._attempt_reads_file = self._file() is not None
        if self._attempt is not None and self._attempt_reads_file:
            # Loading a file that is there takes a second: worth waiting for. A download may take
            # long (or until its timeout, offline): it goes on in the background, requests get 503.
            # Shielded: a request that gives up leaves the attempt running for the next ones. Any failure
            # of the attempt, not only a timeout: one load() does not catch (CUDA out of memory) was this
            # request's 500; _attempt_done logs it and keeps it as the problem, the request gets the 503.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._attempt), max(0.0, timeout))
        if not self.available:
            raise AudioPathUnavailableError(
                f"the EnCodec audio-in path of /resynthesize?model={self.name} is unavailable: the EnCodec "
                f"weights ({WEIGHTS_FILE}) are not loaded on this server; its operator sets {self.weights_setting} "
                f"to the file (later requests retry loading it). /decode/encodec?model={self.name} works meanwhile",
                {"Retry-After": str(math.ceil(RETRY_INTERVAL_S))},
            )

    def _file(self) -> tuple[int, int] | None:
        assert self._features is not None
        return _file_state(self._features.weights_path())

    def _due(self) -> bool:
        state = self._file()
        if state is not None and state != self._failed_file:
            return True  # the file appeared or changed since the attempt that failed
        return _now() - self._tried_at >= RETRY_INTERVAL_S

    def _attempt_done(self, attempt: asyncio.Future[bool]) -> None:
        self._attempt = None
        # One no request awaited (a download) would otherwise fail unheard.
        error = None if attempt.cancelled() else attempt.exception()
        if error is not None:
            self.problem = f"{type(error).__name__}: {error}"
            log.error("loading the EnCodec audio-in path failed: %s", self.problem)


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
