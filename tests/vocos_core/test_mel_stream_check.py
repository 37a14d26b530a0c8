"""vocos_core.mel_stream_check: a stream's mel, chunk by chunk, held to check_mel's range rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vocos_core.config import MelSpectrogramFeaturesConfig
from vocos_core.mel_check import check_mel, mel_front_end
from vocos_core.mel_stream_check import StreamMelCheck

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech_mels" / "speech_mels.npz"
FE = mel_front_end(MelSpectrogramFeaturesConfig())
FLOOR = math.log(1e-7)


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    with np.load(SPEECH) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def verdicts(mel: np.ndarray, sizes: list[int]) -> list[str | None]:
    """``impossible`` after each chunk of ``sizes`` frames (cycled) until the mel is used up."""
    return [v for v, _ in verdicts_and_ends(mel, sizes)]


def verdicts_and_ends(mel: np.ndarray, sizes: list[int]) -> list[tuple[str | None, int]]:
    """``impossible`` after each chunk, with the frames received by then."""
    check, out, start, i = StreamMelCheck(FE), [], 0, 0
    while start < mel.shape[1]:
        chunk = mel[:, start : start + sizes[i % len(sizes)]]
        start, i = start + chunk.shape[1], i + 1
        out.append((check.update(chunk).impossible, start))
    return out


@pytest.mark.parametrize("sizes", [[1], [5, 20, 7], [10_000]])
def test_real_speech_passes_every_chunk(speech: dict[str, np.ndarray], sizes: list[int]) -> None:
    for name, mel in speech.items():
        assert check_mel(mel, FE).impossible is None, name
        assert verdicts(mel, sizes) == [None] * len(verdicts(mel, sizes)), name


@pytest.mark.parametrize(("wrong", "cause"), [
    (lambda m: 20.0 * m / math.log(10.0), "db_scaled"),        # 20 * log10: below the floor and above the bound
    (lambda m: np.exp(m) * 32768.0, "linear"),                  # linear magnitudes of int16-scaled audio
    (lambda m: np.where(m <= FLOOR + 0.01, math.log(1e-10), m), "wrong_floor"),  # another clamp
])
def test_a_wrong_front_end_is_refused_at_its_first_chunk_that_shows_it(speech: dict[str, np.ndarray], wrong,
                                                                      cause: str) -> None:
    mel = wrong(next(iter(speech.values()))).astype(np.float32)
    whole = check_mel(mel, FE)
    assert whole.impossible is not None and whole.cause == cause
    got = verdicts_and_ends(mel, [5, 20, 7])
    first = next(i for i, (v, _) in enumerate(got) if v is not None)
    assert all(v is not None for v, _ in got[first:])  # once refused, every later chunk is too
    # refused at the first chunk whose frames so far would be refused as one request, not before
    assert check_mel(mel[:, : got[first][1]], FE).impossible is not None
    assert first == 0 or check_mel(mel[:, : got[first - 1][1]], FE).impossible is None


def test_outliers_count_over_the_frames_so_far_as_for_a_whole_request(speech: dict[str, np.ndarray]) -> None:
    mel = next(iter(speech.values())).copy()
    frames = mel.shape[1]
    assert mel.size > 20_000
    for column in np.linspace(0, frames - 1, 10).astype(int):  # 20 glitches spread over the mel: 0.07 %
        mel[:2, column] = FLOOR - 3.0
    assert check_mel(mel, FE).ok
    for sizes in ([1], [20], [frames]):  # frame by frame too: each chunk's verdict, not only the last
        assert verdicts(mel, sizes) == [None] * len(verdicts(mel, sizes)), sizes
    mel[:, :2] = FLOOR - 3.0  # 200 values at the start: beyond a handful, and 0.1 % of the whole
    assert check_mel(mel, FE).impossible is not None
    assert verdicts(mel, [20])[0] is not None
    assert verdicts(mel, [1])[0] is not None  # 100 in its first frame: more than a handful
    early = next(iter(speech.values())).copy()
    early[:3, 0] = FLOOR - 3.0  # a glitch of 3 values in the very first frame: a handful, as a request allows
    assert check_mel(early, FE).ok and verdicts(early, [1]) == [None] * early.shape[1]
    one = next(iter(speech.values())).copy()
    one[0, 5] = FLOOR - 7.0  # one value beyond any front-end's range: refused wherever it comes
    assert verdicts(one, [20])[0] is not None and check_mel(one, FE).impossible is not None


def test_a_non_finite_chunk_is_refused() -> None:
    chunk = np.full((100, 3), -5.0, np.float32)
    chunk[1, 1] = np.nan
    check = StreamMelCheck(FE)
    assert check.update(np.full((100, 3), -5.0, np.float32)).impossible is None
    assert check.update(chunk).cause == "non_finite"
