"""Check that an exported directory loads in the reference package and decodes as in vocos_core.

Two steps, two interpreters (the reference venv must never import project code, nor the project
the reference):

    /work/ref-venv/bin/python scripts/check_export_reference.py reference DIR OUT.pt
        vocos 0.1.0: Vocos.from_hparams(DIR/config.yaml) + load_state_dict(strict) + decode of
        seeded features; writes the features and the audio to OUT.pt
    python scripts/check_export_reference.py compare DIR OUT.pt
        vocos_core: Vocos.from_pretrained(DIR) decodes the same features; prints the largest
        relative difference and exits 1 above 1e-5
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

RTOL = 1e-5
FRAMES = 200


def reference(directory: Path, out: Path) -> None:
    from vocos import Vocos

    model = Vocos.from_hparams(str(directory / "config.yaml"))
    state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    n = model.backbone.embed.in_channels
    features = torch.randn(2, n, FRAMES, generator=torch.Generator().manual_seed(0))
    kwargs = {"bandwidth_id": torch.tensor([0])} if hasattr(model.feature_extractor, "bandwidths") else {}
    with torch.no_grad():
        audio = model.decode(features, **kwargs)
    torch.save({"features": features, "audio": audio, "torch": str(torch.__version__)}, out)
    print(f"reference: loaded {directory} strictly, decoded {tuple(features.shape)} -> {tuple(audio.shape)}")


def compare(directory: Path, out: Path) -> int:
    from vocos_core.pretrained import Vocos

    ref = torch.load(out, map_location="cpu", weights_only=True)
    model = Vocos.from_pretrained(directory)
    ids = 0 if model.kind == "encodec" else None
    audio = model.decode(ref["features"], bandwidth_id=ids)
    err = float((audio - ref["audio"]).abs().max() / ref["audio"].abs().max())
    print(f"vocos_core vs vocos 0.1.0 on {directory}: max |diff| / max |ref| = {err:.2e} (limit {RTOL:g})")
    return 0 if err <= RTOL else 1


if __name__ == "__main__":
    mode, directory, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "reference":
        reference(directory, out)
    else:
        sys.exit(compare(directory, out))
