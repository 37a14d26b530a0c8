"""Training data as the reference's ``vocos.dataset``: file lists, peak-normalising gain, soxr resampling, crops.

A file list holds one audio path per line (``find DATA -name "*.wav" > filelist.train``). Each item
is mixed to mono, peak-normalised to a gain drawn from -6..-1 dB (training) or fixed at -3 dB
(validation), which is what the reference's ``sox norm`` effect does, resampled with soxr, then
cut to ``num_samples``: a random crop in training, the first segment in validation, and repeated
to length when the file is shorter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import numpy as np
import soundfile as sf
import soxr
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError

TRAIN_GAIN_DB = (-6.0, -1.0)
VAL_GAIN_DB = -3.0


@dataclasses.dataclass
class DataConfig:
    filelist_path: str
    sampling_rate: int
    num_samples: int
    batch_size: int
    num_workers: int = 0


def read_filelist(path: str | Path) -> list[str]:
    """Non-empty lines of a file list; InputError when it cannot be read or names no file."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the file list ({getattr(exc, 'strerror', None) or exc}); "
                         "expected a text file with one audio path per line") from None
    files = [line for line in lines if line]
    if not files:
        raise InputError(f"{path}: empty file list; expected one audio path per line")
    return files


def check_files(files: list[str], filelist: str | Path, sampling_rate: int) -> None:
    """InputError naming the listed files that are missing, cannot be read as audio or hold none at
    ``sampling_rate``: found now from their headers, not when a shuffled batch reaches them hours into a run."""
    problems, below = [], []
    for path in files:
        if not Path(path).is_file():
            problems.append(f"{path}: no such file{_relative_hint(path, filelist)}")
            continue
        try:
            info = sf.info(path)
        except (sf.LibsndfileError, OSError, RuntimeError) as exc:
            problems.append(f"{path}: cannot be read as audio ({exc})")
            continue
        if info.frames * sampling_rate < info.samplerate:  # not one whole sample at the model's rate
            problems.append(f"{path}: holds no audio ({info.frames} samples at {info.samplerate} Hz, "
                            f"none at {sampling_rate} Hz)")
        elif info.samplerate < sampling_rate:
            below.append((path, info.samplerate))
    if problems:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise InputError(f"{filelist}: {len(problems)} of {len(files)} listed files cannot be used: {shown}")
    if below:  # used, as the reference does, but a model trained on them learns silence above their Nyquist
        path, rate = min(below, key=lambda item: item[1])
        rank_zero_warn(f"{filelist}: {len(below)} of {len(files)} files are below the model's {sampling_rate} Hz "
                       f"(lowest: {path} at {rate} Hz); they are upsampled, so on them the model learns nothing above "
                       f"{rate // 2} Hz: leave them out, or train a model at their rate")


def _relative_hint(path: str, filelist: str | Path) -> str:
    """Where a relative path was looked for: from the working directory (as the reference reads them), which is
    not the file list's folder, where ``find wavs -name "*.wav" > corpus/filelist.train`` run elsewhere means them."""
    if Path(path).is_absolute():
        return ""
    hint = f" (relative paths are read from the working directory, {Path.cwd()}"
    if (Path(filelist).parent / path).is_file():
        hint += f"; it is in the file list's folder {Path(filelist).parent}: list absolute paths"
    return hint + ")"


def peak_normalise(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale ``(S,)`` audio so its peak is at ``gain_db`` dBFS (silence stays silent)."""
    peak = float(np.abs(audio).max(initial=0.0))
    return audio if peak == 0.0 else audio * (10.0 ** (gain_db / 20.0) / peak)


def load_audio(path: str | Path, sampling_rate: int, gain_db: float) -> torch.Tensor:
    """An audio file -> ``(S,)`` float32 at ``sampling_rate``: mixed to mono, peak-normalised to
    ``gain_db`` dBFS, resampled with soxr (the dataset's items before cropping; the scripts' utterances)."""
    audio, sr = sf.read(path, dtype="float32", always_2d=True)  # (S, channels)
    audio = peak_normalise(audio.mean(axis=1), gain_db)
    if sr != sampling_rate:
        audio = soxr.resample(audio, sr, sampling_rate)
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))


def fit_length(audio: torch.Tensor, num_samples: int, train: bool) -> torch.Tensor:
    """``(S,)`` -> ``(num_samples,)``: repeated when short; a random crop (train) or the start (val) when long."""
    length = audio.shape[-1]
    if length < num_samples:
        return audio.repeat(1 + num_samples // length)[:num_samples]
    start = int(torch.randint(0, length - num_samples + 1, ())) if train else 0
    return audio[start:start + num_samples]


class VocosDataset(Dataset[torch.Tensor]):
    def __init__(self, cfg: DataConfig, train: bool) -> None:
        self.filelist = read_filelist(cfg.filelist_path)
        check_files(self.filelist, cfg.filelist_path, cfg.sampling_rate)
        self.sampling_rate = cfg.sampling_rate
        self.num_samples = cfg.num_samples
        self.train = train

    def __len__(self) -> int:
        return len(self.filelist)

    def __getitem__(self, index: int) -> torch.Tensor:
        """-> ``(num_samples,)`` float32."""
        # torch's RNG, not numpy's: DataLoader seeds it per worker, so workers draw different gains.
        gain = float(torch.empty(()).uniform_(*TRAIN_GAIN_DB)) if self.train else VAL_GAIN_DB
        return fit_length(load_audio(self.filelist[index], self.sampling_rate, gain), self.num_samples, self.train)


class VocosDataModule(L.LightningDataModule):
    """Training and validation loaders over two file lists (``DataConfig`` each)."""

    def __init__(self, train_params: DataConfig, val_params: DataConfig) -> None:
        super().__init__()
        self.train_config = train_params
        self.val_config = val_params

    def _loader(self, cfg: DataConfig, train: bool) -> DataLoader[torch.Tensor]:
        return DataLoader(VocosDataset(cfg, train=train), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                          shuffle=train, pin_memory=torch.cuda.is_available(), persistent_workers=cfg.num_workers > 0)

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        return self._loader(self.train_config, train=True)

    def val_dataloader(self) -> DataLoader[torch.Tensor]:
        return self._loader(self.val_config, train=False)
