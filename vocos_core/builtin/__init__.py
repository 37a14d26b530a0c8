"""Models shipped inside the package, for a server that has no other model and no Hub access.

``demo-mel-24khz``: a small Vocos (dim 128, 6 ConvNeXt layers, 100-mel 24 kHz front-end of the
official mel model) trained for 34 minutes on 2 CPU cores on synthetic speech (espeak-ng and
festival voices). A demonstration of the training recipe, far below the official model's quality;
how it was made and measured: docs/training.md.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MEL_24KHZ = Path(__file__).resolve().parent / "demo-mel-24khz"
DEMO_DESCRIPTION = ("the built-in demo model (a small Vocos trained on synthetic speech for demonstration only, "
                    "not the official model)")
