"""Download the configured models into the caches the service reads, then prove they load.

Runs in three places: the image build with ``BAKE_MODELS=1``, the Kubernetes init container that fills
the model-cache volume, and by hand:
``docker compose run --rm --entrypoint python vocos-gpu /opt/vocos/prefetch_models.py``.
It reads the same ``VOCOS_*`` settings as the server (``service.settings.Settings``) and loads every
served model through ``vocos_core`` itself, so the files land exactly where the server will look:
``$HF_HOME`` for the Hub checkpoints and ``$TORCH_HOME/hub/checkpoints`` for the EnCodec encoder.
A tiny decode (and, for EnCodec, a tiny encode, which loads the encoder weights) checks each model.

Exit status: 0 when every enabled model loaded and ran, 1 otherwise (the message names the model).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
import types

import torch
from pydantic import ValidationError

from service.runtime.registry import RegistryError, model_specs
from service.settings import Settings, invalid_settings
from vocos_core import Vocos
from vocos_core.errors import VocosError

log = logging.getLogger("vocos.prefetch")

# Enough samples for every supported feature extractor's padding; silence is a valid input.
_PROBE_SAMPLES = 2400
_PROBE_FRAMES = 4


def prefetch(settings: Settings) -> list[str]:
    """Load each served model (``service.runtime.registry``) once; returns their names, in order."""
    loaded: list[str] = []
    for spec in model_specs(settings):
        start = time.monotonic()
        model = Vocos.from_pretrained(spec.source, spec.revision, encodec_weights=spec.encodec_weights)
        if spec.legacy and model.kind != spec.name:
            raise VocosError(
                f"{spec.source}: configured as the {spec.name} model but its checkpoint is a {model.kind} model"
            )
        _probe(model)
        log.info("%s model %s ready in the cache (%.1f s)", spec.name, spec.source, time.monotonic() - start)
        loaded.append(spec.name)
    return loaded


def _probe(model: Vocos) -> None:
    """Run the model on a few frames of zeros; for EnCodec also encode silence (loads the encoder)."""
    features = torch.zeros(1, model.n_features, _PROBE_FRAMES)  # (B, C, T)
    bandwidth = 0 if model.kind == "encodec" else None
    audio = model.decode(features, bandwidth_id=bandwidth)
    if not torch.isfinite(audio).all():
        raise VocosError(f"{model.kind} model produced non-finite audio on a zero input")
    if model.kind == "encodec":
        model.audio_to_features(torch.zeros(_PROBE_SAMPLES), bandwidth_id=0)


def _stop(signum: int, frame: types.FrameType | None) -> None:
    log.error("stopped by %s", signal.Signals(signum).name)
    sys.exit(128 + signum)


def main() -> int:
    # As PID 1 of an init container a signal without a handler is ignored: a pod deleted during a long
    # download would wait for SIGKILL at the end of its grace period.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Every field from its VOCOS_* variable; unpacking an empty mapping keeps mypy (no pydantic plugin)
        # from asking for each field as an argument.
        settings = Settings(**{})
    except ValidationError as exc:  # the init container's log: one line naming the variable, not a traceback
        log.error("prefetch failed: %s", invalid_settings(exc))
        return 1
    try:
        if not model_specs(settings):
            log.warning("no model is configured (VOCOS_MODELS, VOCOS_MODELS_FILE, VOCOS_MEL_MODEL, "
                        "VOCOS_ENCODEC_MODEL): nothing to fetch")
            return 0
        prefetch(settings)
    except (VocosError, OSError, RegistryError) as exc:
        log.error("prefetch failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
