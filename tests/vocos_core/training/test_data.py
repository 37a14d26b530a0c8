"""The data module: file lists, gain, resampling, crops, as the reference's dataset."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vocos_core.errors import InputError
from vocos_core.training.data import (
    TRAIN_GAIN_DB,
    VAL_GAIN_DB,
    DataConfig,
    VocosDataModule,
    VocosDataset,
    fit_length,
    peak_normalise,
    read_filelist,
)


def write(path: Path, audio: np.ndarray, sr: int) -> str:
    sf.write(path, audio, sr, subtype="FLOAT")
    return str(path)


def test_peak_normalise_puts_the_peak_at_the_gain() -> None:
    audio = np.array([0.1, -0.5, 0.25], dtype=np.float32)
    out = peak_normalise(audio, -6.0)
    assert np.abs(out).max() == pytest.approx(10 ** (-6 / 20))
    assert np.array_equal(peak_normalise(np.zeros(4, dtype=np.float32), -3.0), np.zeros(4))


def test_fit_length_repeats_short_files_and_crops_long_ones() -> None:
    short = torch.arange(3.0)
    assert fit_length(short, 7, train=True).tolist() == [0, 1, 2, 0, 1, 2, 0]
    long = torch.arange(100.0)
    assert torch.equal(fit_length(long, 10, train=False), torch.arange(10.0))
    torch.manual_seed(0)
    starts = {int(fit_length(long, 10, train=True)[0]) for _ in range(50)}
    assert len(starts) > 5 and all(0 <= s <= 90 for s in starts)


def test_items_are_mono_resampled_normalised_and_cut(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], axis=1)
    paths = [write(tmp_path / "a.wav", stereo.astype(np.float32), 16000)]
    (tmp_path / "list").write_text("\n".join(paths) + "\n\n")
    val = VocosDataset(DataConfig(str(tmp_path / "list"), 24000, 12000, 1), train=False)
    item = val[0]
    assert item.shape == (12000,) and item.dtype == torch.float32
    assert float(item.abs().max()) == pytest.approx(10 ** (VAL_GAIN_DB / 20), rel=0.02)
    train = VocosDataset(DataConfig(str(tmp_path / "list"), 24000, 12000, 1), train=True)
    peaks = [float(train[0].abs().max()) for _ in range(20)]
    lo, hi = (10 ** (g / 20) for g in TRAIN_GAIN_DB)
    assert all(lo * 0.97 <= p <= hi * 1.03 for p in peaks) and max(peaks) - min(peaks) > 0.05


def test_an_empty_file_list_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "list").write_text("\n\n")
    with pytest.raises(InputError, match="empty file list"):
        read_filelist(tmp_path / "list")


def test_a_missing_file_list_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"absent: cannot read the file list \(No such file or directory\)"):
        read_filelist(tmp_path / "absent")


def test_listed_files_without_audio_are_named_before_training(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", np.zeros(2400, np.float32), 24000)
    empty = write(tmp_path / "empty.wav", np.zeros(0, np.float32), 24000)  # would divide by zero in fit_length
    one = write(tmp_path / "one.wav", np.zeros(1, np.float32), 48000)  # no sample left at 24 kHz
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    listed = [good, empty, one, str(tmp_path / "junk.wav"), str(tmp_path / "gone.wav")]
    (tmp_path / "list").write_text("\n".join(listed))
    cfg = DataConfig(str(tmp_path / "list"), 24000, 4800, 2)
    with pytest.raises(InputError) as caught:
        VocosDataset(cfg, train=True)
    message = str(caught.value)
    assert "list: 4 of 5 listed files cannot be used: " in message
    assert "empty.wav: holds no audio (0 samples at 24000 Hz, none at 24000 Hz)" in message
    assert "one.wav: holds no audio (1 samples at 48000 Hz, none at 24000 Hz)" in message
    assert "junk.wav: cannot be read as audio" in message and message.endswith("; ...")
    (tmp_path / "list").write_text(str(tmp_path / "gone.wav"))
    with pytest.raises(InputError, match=r"gone.wav: no such file$"):
        VocosDataset(cfg, train=True)
    (tmp_path / "list").write_text(good)
    assert len(VocosDataset(cfg, train=True)) == 1


def test_a_relative_path_not_found_says_where_it_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """``find wavs -name "*.wav" > corpus/filelist.train`` run in corpus/, training run from its parent: "no such
    file" alone left the user guessing, the file being right there beside the list."""
    (tmp_path / "corpus" / "wavs").mkdir(parents=True)
    write(tmp_path / "corpus" / "wavs" / "a.wav", np.zeros(2400, np.float32), 24000)
    (tmp_path / "corpus" / "filelist.train").write_text("wavs/a.wav\nwavs/gone.wav\n")
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig("corpus/filelist.train", 24000, 4800, 2)
    with pytest.raises(InputError) as caught:
        VocosDataset(cfg, train=True)
    message = str(caught.value)
    assert (f"wavs/a.wav: no such file (relative paths are read from the working directory, {tmp_path}; it is in "
            "the file list's folder corpus: list absolute paths)") in message
    assert message.endswith(f"wavs/gone.wav: no such file (relative paths are read from the working directory, "
                            f"{tmp_path})")
    (tmp_path / "corpus" / "filelist.train").write_text("wavs/a.wav\n")
    monkeypatch.chdir(tmp_path / "corpus")  # from the working directory they are found, as in the reference
    assert len(VocosDataset(DataConfig("filelist.train", 24000, 4800, 2), train=True)) == 1


def test_loaders_batch_the_crops(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"{i}.wav", np.random.default_rng(i).standard_normal(9000).astype(np.float32) * 0.1,
                   24000) for i in range(4)]
    (tmp_path / "list").write_text("\n".join(paths))
    cfg = DataConfig(str(tmp_path / "list"), 24000, 4096, 2)
    dm = VocosDataModule(cfg, cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 4096)
    assert len(dm.val_dataloader()) == 2


def test_files_below_the_models_rate_are_used_with_a_warning(tmp_path: Path) -> None:
    """A 16 kHz corpus for the 24 kHz model trained without a word: upsampled, it teaches the model silence
    above 8 kHz."""
    tone = np.sin(np.arange(8000) / 10).astype(np.float32)
    low = write(tmp_path / "narrow.wav", tone, 16000)
    full = write(tmp_path / "full.wav", tone, 24000)
    for name, paths in (("mixed", [full, low]), ("full", [full])):
        (tmp_path / name).write_text("\n".join(paths) + "\n", encoding="utf-8")
    config = {"sampling_rate": 24000, "num_samples": 4096, "batch_size": 1}
    with pytest.warns(UserWarning, match=r"1 of 2 files are below the model's 24000 Hz \(lowest: .*narrow\.wav at "
                                         r"16000 Hz\).* nothing above 8000 Hz"):
        dataset = VocosDataset(DataConfig(filelist_path=str(tmp_path / "mixed"), **config), train=True)
    assert len(dataset) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VocosDataset(DataConfig(filelist_path=str(tmp_path / "full"), **config), train=True)

