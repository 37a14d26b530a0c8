"""Random-weight checkpoints in the official Hub layout, so tests and demos never need the Hub."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME
from .config import HIFIGAN_MEL_CLASS_PATH, parse_config
from .pretrained import Vocos

Backbone = Literal["convnext", "resnet"]
Head = Literal["istft", "imdct_symexp", "imdct_cos"]
Kind = Literal["mel", "encodec", "hifigan-mel"]
# The front-end of a Vocos for Matcha-TTS / HiFi-GAN-style TTS output (as in Vocos PR #47's config).
HIFIGAN_MEL_ARGS: dict[str, Any] = {"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "win_length": 1024,
                                    "n_mels": 80, "f_min": 0.0, "f_max": 8000.0, "log_floor": 1e-5}


def checkpoint_config(kind: Kind = "mel", *, dim: int = 32, num_layers: int = 1,
                      padding: str | None = None, backbone: Backbone = "convnext",
                      head: Head = "istft") -> dict[str, Any]:
    """A ``config.yaml`` mapping shaped like the official ones (mel: 100 mels, hop 256; EnCodec: hop 320).

    ``"hifigan-mel"``: the HiFi-GAN front-end at 22.05 kHz, 80 mels, n_fft 1024, hop 256, f_max 8 kHz.
    """
    if kind == "hifigan-mel":
        padding = padding or "same"
        fe: dict[str, Any] = {"class_path": HIFIGAN_MEL_CLASS_PATH,
                              "init_args": {**HIFIGAN_MEL_ARGS, "padding": padding}}
        channels, n_fft, hop = 80, 1024, 256
    elif kind == "mel":
        padding = padding or "center"
        fe = {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100,
                          "padding": padding},
        }
        channels, n_fft, hop = 100, 1024, 256
    else:
        padding = padding or "same"
        fe = {"class_path": "vocos.feature_extractors.EncodecFeatures",
              "init_args": {"encodec_model": "encodec_24khz", "bandwidths": [1.5, 3.0, 6.0, 12.0]}}
        channels, n_fft, hop = 128, 1280, 320
    if backbone == "convnext":
        bb: dict[str, Any] = {"class_path": "vocos.models.VocosBackbone",
                              "init_args": {"input_channels": channels, "dim": dim, "intermediate_dim": dim * 3,
                                            "num_layers": num_layers}}
        if kind == "encodec":
            bb["init_args"]["adanorm_num_embeddings"] = 4
    else:
        bb = {"class_path": "vocos.models.VocosResNetBackbone",
              "init_args": {"input_channels": channels, "dim": dim, "num_blocks": num_layers}}
    heads = {
        "istft": ("vocos.heads.ISTFTHead", {"dim": dim, "n_fft": n_fft, "hop_length": hop, "padding": padding}),
        "imdct_symexp": ("vocos.heads.IMDCTSymExpHead", {"dim": dim, "mdct_frame_len": 2 * hop, "padding": padding}),
        "imdct_cos": ("vocos.heads.IMDCTCosHead", {"dim": dim, "mdct_frame_len": 2 * hop, "padding": padding}),
    }
    class_path, args = heads[head]
    return {"feature_extractor": fe, "backbone": bb, "head": {"class_path": class_path, "init_args": args}}


def random_model(config: dict[str, Any], seed: int = 0) -> Vocos:
    """A model with random weights of a realistic scale (unit-ish activations, audible output)."""
    gen = torch.Generator().manual_seed(seed)
    model = Vocos(parse_config(config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "gamma", "weight_g", "scale.weight")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("codebook_weights"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / fan_in**0.5 if p.dim() > 1 else 0.02))
    return model


def write_random_checkpoint(directory: str | os.PathLike[str], kind: Kind = "mel", *,
                            dim: int = 32, num_layers: int = 1, padding: str | None = None,
                            backbone: Backbone = "convnext", head: Head = "istft", seed: int = 0) -> Path:
    """Write ``config.yaml`` + ``pytorch_model.bin`` of a tiny random model; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = checkpoint_config(kind, dim=dim, num_layers=num_layers, padding=padding, backbone=backbone, head=head)
    (directory / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    torch.save(random_model(config, seed).state_dict(), directory / WEIGHTS_NAME)
    return directory
