"""Reference outputs for component classes the shared fixtures do not cover.

Two steps, two environments (the reference needs torchaudio, which cannot share one with ours):

    python3 scripts/make_extra_reference.py write tests/data/extra           # our env: random checkpoints
    /path/to/refvenv/bin/python scripts/make_extra_reference.py run tests/data/extra   # reference env

The reference venv holds torch==2.11.0 torchaudio==2.11.0 vocos==0.1.0. ``run`` loads each checkpoint
with the reference's ``Vocos.from_hparams`` + ``load_state_dict`` and stores its outputs in
``cases.npz`` (keys ``<name>/mel_in``, ``<name>/decode``, ``<name>/audio_in``, ``<name>/resynth``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CASES = {
    # name: (backbone, head, padding)
    "mel-resnet-istft-center": ("resnet", "istft", "center"),
    "mel-convnext-imdctsymexp-same": ("convnext", "imdct_symexp", "same"),
    "mel-convnext-imdctcos-center": ("convnext", "imdct_cos", "center"),
    "mel-resnet-imdctcos-same": ("resnet", "imdct_cos", "same"),
}


def write(out: Path) -> None:
    from vocos_core.testing import write_random_checkpoint

    for i, (name, (backbone, head, padding)) in enumerate(CASES.items()):
        write_random_checkpoint(out / name, "mel", dim=16, num_layers=2, padding=padding, backbone=backbone,
                                head=head, seed=100 + i)


def run(out: Path) -> None:
    import scipy.signal
    import torch

    # vocos 0.1.0 calls scipy.signal.cosine, which newer SciPy keeps only under scipy.signal.windows.
    if not hasattr(scipy.signal, "cosine"):
        scipy.signal.cosine = scipy.signal.windows.cosine
    from vocos import Vocos  # the reference package, only in the reference venv

    rng = np.random.default_rng(0)
    cases: dict[str, np.ndarray] = {}
    for name in CASES:
        model = Vocos.from_hparams(str(out / name / "config.yaml"))
        model.load_state_dict(torch.load(out / name / "pytorch_model.bin", map_location="cpu"))
        model.eval()
        mel = rng.standard_normal((2, 100, 37)).astype(np.float32)
        audio = (0.3 * rng.standard_normal((2, 9000))).astype(np.float32)
        with torch.inference_mode():
            cases[f"{name}/mel_in"] = mel
            cases[f"{name}/decode"] = model.decode(torch.from_numpy(mel)).numpy()
            cases[f"{name}/audio_in"] = audio
            cases[f"{name}/resynth"] = model(torch.from_numpy(audio)).numpy()
    np.savez_compressed(out / "cases.npz", **cases)


if __name__ == "__main__":
    {"write": write, "run": run}[sys.argv[1]](Path(sys.argv[2]))
