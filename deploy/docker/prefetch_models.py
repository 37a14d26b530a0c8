"""Download the configured models into the caches the service reads, then prove they load.

Runs in three places: the image build with ``BAKE_MODELS=1``, the Kubernetes init container that fills
the model-cache volume, and by hand:
``docker compose run --rm --entrypoint python vocos-gpu /opt/vocos/prefetch_models.py``.
It reads the same ``VOCOS_*`` settings as the server (``service.settings.Settings``) and loads every
enabled model through ``vocos_core`` itself, so the files land exactly where the server will look:
``$HF_HOME`` for the Hub checkpoints and ``$TORCH_HOME/hub/checkpoints`` for the EnCodec encoder.
A tiny decode (and, for EnCodec, a tiny encode, which loads the encoder weights) checks each model.

Exit status: 0 when every enabled model loaded and ran, 1 otherwise (the message names the model).
"""

from __future__ import annotations

import logging
import sys
import time

import torch

from service.settings import Settings
from vocos_core import Vocos
from vocos_core.errors import VocosError

log = logging.getLogger("vocos.prefetch")

# Enough samples for every supported feature extractor's padding; silence is a valid input.
_PROBE_SAMPLES = 2400
_PROBE_FRAMES = 4


def prefetch(settings: Settings) -> list[str]:
    """Load each enabled model once; returns the kinds loaded, in order ("mel", "encodec")."""
    loaded: list[str] = []
    for kind in settings.enabled_models:
        source = settings.model_source(kind)
        assert source is not None  # enabled_models lists only models with a source
        start = time.monotonic()
        model = Vocos.from_pretrained(source, settings.revision, encodec_weights=settings.encodec_weights)
        if model.kind != kind:
            raise VocosError(
                f"{source}: configured as the {kind} model but its checkpoint is a {model.kind} model"
            )
        _probe(model)
        log.info("%s model %s ready in the cache (%.1f s)", kind, source, time.monotonic() - start)
        loaded.append(kind)
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


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every field from its VOCOS_* variable; unpacking an empty mapping keeps mypy (no pydantic plugin)
    # from asking for each field as an argument.
    settings = Settings(**{})
    if not settings.enabled_models:
        log.warning("VOCOS_MEL_MODEL and VOCOS_ENCODEC_MODEL are both 'none': nothing to fetch")
        return 0
    try:
        prefetch(settings)
    except (VocosError, OSError) as exc:
        log.error("prefetch failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
