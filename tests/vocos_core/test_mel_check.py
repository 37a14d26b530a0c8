"""vocos_core.mel_check: no false alarm on real speech, each wrong front-end named, the bound derived."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from vocos_core import Vocos
from vocos_core.config import MelSpectrogramFeaturesConfig
from vocos_core.feature_extractors import MelSpectrogramFeatures
from vocos_core.mel_check import MelCheck, MelFrontEnd, check_mel, log_mel_bound, mel_front_end

DATA = Path(__file__).resolve().parents[1] / "data"
SPEECH = DATA / "speech_mels" / "speech_mels.npz"
CONFIG = MelSpectrogramFeaturesConfig()
FE = mel_front_end(CONFIG)
FLOOR = math.log(1e-7)
SR = CONFIG.sample_rate


@pytest.fixture(scope="module")
def features() -> MelSpectrogramFeatures:
    return MelSpectrogramFeatures(CONFIG)


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    with np.load(SPEECH) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def log_mel(features: MelSpectrogramFeatures, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return features(torch.from_numpy(np.asarray(audio, np.float32))[None])[0].numpy()


# ---- the front-end description and its bound ---------------------------------------------------------


def test_front_end_of_the_official_config() -> None:
    assert FE.log_floor == pytest.approx(-16.118096, abs=1e-6)
    # sum(periodic Hann 1024) = 512; the widest band (the top one) sums to 15.2 bins of weight
    assert FE.log_max == pytest.approx(math.log(512.0) + math.log(15.2), abs=0.01)
    assert FE.n_mels == 100


def test_front_end_from_module_and_checkpoint_buffers_agree(features: MelSpectrogramFeatures) -> None:
    assert mel_front_end(features) == FE
    vocos = Vocos.from_pretrained(DATA / "reference" / "vocos-mel-tiny")  # official buffer layout
    assert isinstance(vocos.feature_extractor, MelSpectrogramFeatures)
    loaded = mel_front_end(vocos.feature_extractor)
    assert loaded.log_max == pytest.approx(FE.log_max, abs=1e-6)
    assert loaded.log_floor == FE.log_floor
    assert mel_front_end(FE) is FE
    with pytest.raises(TypeError, match="MelFrontEnd"):
        mel_front_end("vocos")  # type: ignore[arg-type]


def test_front_end_numbers_are_validated() -> None:
    with pytest.raises(ValueError, match="log_floor < log_max"):
        MelFrontEnd(log_floor=1.0, log_max=0.0)
    with pytest.raises(ValueError, match="log_floor < log_max"):
        MelFrontEnd(log_floor=-math.inf, log_max=0.0)


def test_bound_formula() -> None:
    window = torch.hann_window(8)
    fb = torch.tensor([[0.0, 1.0], [0.5, 1.0], [0.5, 0.5]])  # band sums 1.0 and 2.5
    assert log_mel_bound(window, fb) == pytest.approx(math.log(2.5 * 4.0))
    assert log_mel_bound(window, fb, magnitude_eps=9.0) == pytest.approx(math.log(2.5 * 5.0))
    with pytest.raises(ValueError, match="n_freqs, n_mels"):
        log_mel_bound(window, fb[0])


def test_full_scale_sines_at_bin_centres_come_close_to_and_never_above_the_bound(
        features: MelSpectrogramFeatures) -> None:
    fb = features.mel_spec.mel_scale.fb.double()
    band_bound = torch.log(fb.sum(dim=0) * 512.0).numpy()  # per band; FE.log_max is their max
    assert band_bound.max() == pytest.approx(FE.log_max)
    t = torch.arange(SR // 4, dtype=torch.float64) / SR
    bins = torch.arange(1, CONFIG.n_fft // 2, dtype=torch.float64)  # every bin centre but DC and Nyquist
    sines = torch.sin(2 * math.pi * bins[:, None] * (SR / CONFIG.n_fft) * t[None]).float()
    with torch.no_grad():
        m = features(sines)[:, :, 4:-4].amax(dim=2).numpy()  # (bins, bands), interior frames
    assert m.max() <= FE.log_max
    assert (m <= band_bound + 1e-4).all()
    gaps = (band_bound - m).min(axis=1)
    # a real sine of amplitude 1 puts sum(window) / 2 in its bin: the best band comes within log 2 of
    # its bound (band 0 weighs bin 1 only), none comes closer
    assert min(gaps) == pytest.approx(math.log(2.0), abs=2e-3)


@pytest.mark.parametrize("name", ["square", "sign_chirp", "random_pm1", "dc", "nyquist", "clipped_noise"])
def test_extreme_full_scale_audio_is_below_the_bound_and_not_flagged(features: MelSpectrogramFeatures,
                                                                     name: str) -> None:
    rng = np.random.default_rng(0)
    n = SR // 2
    t = np.arange(n) / SR
    audio = {
        "square": np.sign(np.sin(2 * np.pi * 1000 * t)),
        "sign_chirp": np.sign(np.sin(2 * np.pi * (50 + 11000 * t) * t)),
        "random_pm1": rng.choice([-1.0, 1.0], n),
        "dc": np.ones(n),
        "nyquist": np.cos(np.pi * np.arange(n)),
        "clipped_noise": np.clip(10 * rng.standard_normal(n), -1, 1),
    }[name]
    m = log_mel(features, audio)
    assert m.max() <= FE.log_max
    assert check_mel(m, FE) == MelCheck()


# ---- real audio: no false alarm -------------------------------------------------------------------


def test_the_fixture_is_real_speech(speech: dict[str, np.ndarray]) -> None:
    assert len(speech) >= 6
    for m in speech.values():
        assert m.shape[0] == 100 and m.shape[1] >= 200
        assert m.min() >= -16.13 and m.max() <= 5.5


def test_real_speech_passes(speech: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    for name, m in speech.items():
        for gain_db in (0, -6, -12, -20, -30):  # an audio gain, as the clamped mel sees it
            g = np.maximum(m + gain_db / 20 * math.log(10), FLOOR).astype(np.float32)
            for variant in (g, g.astype(np.float16), torch.from_numpy(g), g.astype(np.float64)):
                assert check_mel(variant, FE) == MelCheck(), (name, gain_db)
        # as an acoustic model predicts it: scattered around the right values, below the floor too
        for sigma in (0.1, 0.3):
            assert check_mel(m + rng.normal(0, sigma, m.shape).astype(np.float32), FE).ok, (name, sigma)
        for start, size in ((0, 1), (0, 2), (0, 3), (0, 5), (m.shape[1] // 2, 4), (m.shape[1] - 10, 10)):
            assert check_mel(m[:, start:start + size], FE).ok, (name, start, size)


def test_silence_short_inputs_noise_and_music_pass(features: MelSpectrogramFeatures) -> None:
    rng = np.random.default_rng(1)
    t = np.arange(SR) / SR
    click = np.zeros(SR)
    click[SR // 2] = 1 / 32767  # one LSB in digital silence: a flat spectrum in one frame
    chord = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((220, 277.2, 329.6, 440, 880)))
    cases = {
        "silence": np.zeros(SR),
        "silence_600": np.zeros(600),
        "lsb_click": click,
        "white_-20dB": 0.1 * rng.standard_normal(SR) / 4,
        "white_-60dB": 1e-3 * rng.standard_normal(SR) / 4,
        "clipped_white": np.clip(rng.standard_normal(SR), -1, 1),
        "chord": 0.2 * chord,
        "sine_50Hz_-30dB": 0.03 * np.sin(2 * np.pi * 50 * t),
    }
    for name, audio in cases.items():
        m = log_mel(features, audio)
        for variant in (m, m.astype(np.float16), m[:, :1], m[:, :3]):
            assert check_mel(variant, FE) == MelCheck(), name


# ---- wrong front-ends: detected and named --------------------------------------------------------

LN10 = math.log(10)


def _db20(m: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(np.exp(m), 1e-5))


def _db_top80(m: np.ndarray) -> np.ndarray:
    db = _db20(m)
    return np.maximum(db - db.max(), -80.0)


def _zscore(m: np.ndarray) -> np.ndarray:
    return (m - m.mean()) / m.std()


def _zscore_bands(m: np.ndarray) -> np.ndarray:
    return (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-5)


TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str, str]] = {
    # name: (transform of the natural-log mel, outcome, cause)
    "db20": (_db20, "impossible", "db_scaled"),
    "db10_power": (lambda m: 10 * np.log10(np.maximum(np.exp(2 * m), 1e-10)), "impossible", "db_scaled"),
    "db_ref_max_top80": (_db_top80, "impossible", "db_scaled"),
    "db_norm_0_1": (lambda m: (_db_top80(m) + 80) / 80, "warning", "normalized"),
    "db_norm_-1_1": (lambda m: (_db_top80(m) + 80) / 40 - 1, "warning", "normalized"),
    "tacotron_-4_4": (lambda m: np.clip(8 * (_db20(m) + 100) / 100 - 4, -4, 4), "warning", "normalized"),
    "zscore": (_zscore, "warning", "normalized"),
    "zscore_per_band": (_zscore_bands, "warning", "normalized"),
    "linear": (np.exp, "any", "linear"),
    "linear_quiet": (lambda m: 0.03 * np.exp(m), "warning", "linear"),
    "int16_audio": (lambda m: np.maximum(m + math.log(32767), FLOOR), "impossible", "out_of_range"),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_each_wrong_front_end_is_detected_on_every_utterance(speech: dict[str, np.ndarray], transform: str) -> None:
    fn, outcome, cause = TRANSFORMS[transform]
    for name, m in speech.items():
        wrong = fn(m.astype(np.float64)).astype(np.float32)
        for variant in (wrong, wrong.astype(np.float16)):
            if variant.dtype == np.float16 and not np.isfinite(variant).all():
                continue  # linear magnitudes beyond float16
            r = check_mel(variant, FE)
            assert r.cause == cause, (name, r)
            got = "impossible" if r.impossible else "warning" if r.warning else "ok"
            assert outcome in (got, "any") and got != "ok", (name, r)


def test_a_predicted_linear_mel_is_named_linear(speech: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    loud = 0
    for name, m in speech.items():
        lin = np.exp(m.astype(np.float64))
        noisy = (lin + rng.normal(0, 0.05 * lin.std(), m.shape)).astype(np.float32)  # negative values too
        r = check_mel(noisy, FE)
        if lin.max() > FE.log_max + 0.5:
            loud += 1
            assert r.impossible is not None and r.cause == "linear", (name, r)
    assert loud >= 6


def _has_clamped(m: np.ndarray, value: float) -> bool:
    """Whether clamping ``m`` at ``value`` changes >= 5 values in >= 2 bands and 2 frames (a pile)."""
    mask = m < value
    return bool(mask.sum() >= 5 and mask.any(axis=1).sum() >= 2 and mask.any(axis=0).sum() >= 2)


@pytest.mark.parametrize(("transform", "clamp", "cause"), [
    ("hifigan_floor", 1e-5, "wrong_floor"),  # log(clamp(x, 1e-5))
    ("log10", 1e-7, "log10"),
    ("log10_clamp_1e-5", 1e-5, "log10"),
])
def test_floor_signatures_are_detected_where_the_clamp_left_one(speech: dict[str, np.ndarray], transform: str,
                                                                clamp: float, cause: str) -> None:
    detected = 0
    for name, m in speech.items():
        clamped = np.log(np.maximum(np.exp(m.astype(np.float64)), clamp))
        wrong = (clamped / LN10 if transform.startswith("log10") else clamped).astype(np.float32)
        # fp16 storage put the floor at -16.125, below log(1e-7): count the floor as clamped
        signature = _has_clamped(m, math.log(clamp) + (0.01 if clamp == 1e-7 else 0.0))
        for variant in (wrong, wrong.astype(np.float16)):
            r = check_mel(variant, FE)
            if signature:
                assert r.warning is not None and r.cause == cause, (name, r)
            else:  # nothing was clamped: no evidence (for hifigan_floor, the mel is even right)
                assert r.ok, (name, r)
        detected += signature
    assert detected >= 4


def test_impossible_messages_state_what_was_expected(speech: dict[str, np.ndarray]) -> None:
    m = next(iter(speech.values()))
    high = check_mel(_db20(m), FE)
    assert high.impossible is not None and high.cause == "db_scaled"
    assert "above 8.95, the largest log magnitude" in high.impossible
    assert "below -16.118, the log floor" in high.impossible
    low = check_mel(_db_top80(m), FE)
    assert low.impossible is not None and "go down to -80" in low.impossible and "above" not in low.impossible
    lower_clamp = np.where(m <= FLOOR + 0.01, math.log(1e-10), m)  # log(clamp(x, 1e-10))
    r = check_mel(lower_clamp, FE)
    assert r.cause == "wrong_floor" and r.impossible is not None and "go down to -23.03" in r.impossible


def test_a_few_outliers_are_not_impossible(speech: dict[str, np.ndarray]) -> None:
    m = next(iter(speech.values())).copy()
    m[:20, 10] = FLOOR - 3.0  # 20 of 28 200 values, 3 nats below the floor: a predicted glitch
    assert check_mel(m, FE).ok
    m[:40, 10] = FLOOR - 3.0  # 40 of 28 200: more than 0.1% cannot be a glitch
    assert check_mel(m, FE).impossible is not None
    m[:40, 10] = FLOOR - 1.4  # within the tolerance
    assert check_mel(m, FE).ok
    m[0, 20] = FLOOR - 7.0  # one value 7 nats below: no front-end of this model gives that
    assert check_mel(m, FE).impossible is not None


def test_other_front_ends_pass_their_own_numbers(speech: dict[str, np.ndarray]) -> None:
    hifigan = MelFrontEnd(log_floor=math.log(1e-5), log_max=FE.log_max, n_mels=100, name="the HiFi-GAN front-end")
    m = speech["espeak_en_peak-1dB"]
    own = np.maximum(m, math.log(1e-5))
    assert check_mel(own, hifigan).ok
    r = check_mel(m, hifigan)  # a Vocos mel, below this floor
    assert r.cause == "wrong_floor" and r.impossible is not None and "the HiFi-GAN front-end" in r.impossible


def test_inputs_it_refuses(speech: dict[str, np.ndarray]) -> None:
    m = next(iter(speech.values()))
    with pytest.raises(ValueError, match=r"\(n_mels, T\)"):
        check_mel(m[None], FE)
    with pytest.raises(ValueError, match=r"expected \(100, T\)"):
        check_mel(m[:80], FE)
    with pytest.raises(TypeError, match="floating-point"):
        check_mel(np.zeros((100, 3), np.int64), FE)
    with pytest.raises(ValueError, match="empty"):
        check_mel(np.zeros((100, 0), np.float32), FE)
    bad = m.copy()
    bad[3, 3] = np.nan
    assert check_mel(bad, FE).cause == "non_finite"


def test_a_constant_mel_is_not_silence() -> None:
    assert check_mel(np.full((100, 50), FLOOR, np.float32), FE).ok
    r = check_mel(np.zeros((100, 50), np.float32), FE)
    assert r.cause == "wrong_floor" and r.warning is not None


def test_ten_seconds_take_well_under_a_millisecond(speech: dict[str, np.ndarray]) -> None:
    mels = list(speech.values())
    ten_s = np.concatenate(mels * 4, axis=1)[:, : 10 * SR // 256]  # 100 x 937
    for m in (ten_s, ten_s / LN10, np.exp(ten_s)):
        check_mel(m, FE)
        best = min(_timed(lambda m=m: check_mel(m, FE)) for _ in range(30))
        assert best < 1e-3


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
