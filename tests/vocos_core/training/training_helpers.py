"""Tiny corpora and tiny configs for the training tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "vocos_core" / "training" / "configs"
TINY_DIM = 16


def fixture_script(name: str) -> ModuleType:
    """``scripts/<name>.py``, the reference-venv script that made a fixture, loaded for the helpers
    both sides use (it imports the reference's packages only inside its functions)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_corpus(directory: Path, sample_rate: int, n: int = 4, seconds: float = 0.4, seed: int = 0) -> Path:
    """``n`` short WAVs of harmonic tones plus noise at ``sample_rate`` (one at another rate, to exercise
    resampling); returns the file list."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        sr = sample_rate if i else 16000
        t = np.arange(int(seconds * sr)) / sr
        f0 = 110 + 40 * i
        audio = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.3 + 0.01 * rng.standard_normal(t.size)
        path = directory / f"utt{i}.wav"
        sf.write(path, audio.astype(np.float32), sr)
        paths.append(str(path))
    filelist = directory / "filelist"
    filelist.write_text("\n".join(paths) + "\n", encoding="utf-8")
    return filelist


def tiny_config(name: str, tmp: Path, *, max_steps: int = 4, extra_model: dict[str, Any] | None = None,
                trainer: dict[str, Any] | None = None) -> Path:
    """The shipped config ``name`` at tiny sizes over a tiny corpus, with its logs and checkpoints in ``tmp``."""
    config = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    sr = config["model"]["sample_rate"]
    filelist = write_corpus(tmp / "corpus", sr)
    hop = config["model"]["head"]["init_args"].get("hop_length") or \
        config["model"]["head"]["init_args"]["mdct_frame_len"] // 2
    for split in ("train_params", "val_params"):
        config["data"]["init_args"][split].update(filelist_path=str(filelist), num_samples=16 * hop, batch_size=2,
                                                  num_workers=0)
    model = config["model"]
    for part in ("backbone", "head"):
        model[part]["init_args"]["dim"] = TINY_DIM
    bb = model["backbone"]["init_args"]
    bb.update(num_layers=1) if "num_layers" in bb else bb.update(num_blocks=1)
    if "intermediate_dim" in bb:
        bb["intermediate_dim"] = 3 * TINY_DIM
    model.update(extra_model or {})
    config["trainer"].update(max_steps=max_steps, limit_val_batches=1, accelerator="cpu", devices=1, strategy="auto",
                             log_every_n_steps=1, enable_progress_bar=False, default_root_dir=str(tmp))
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp / "logs")
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["save_top_k"] = 0  # last.ckpt only: each file is 0.5 GB of discriminators + Adam
    config["trainer"].update(trainer or {})
    path = tmp / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
