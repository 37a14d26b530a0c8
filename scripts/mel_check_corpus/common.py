"""Shared by the corpus measurements: the official front-end, the real-audio variants, the wrong front-ends."""
import numpy as np
import torch

from vocos_core.config import MelSpectrogramFeaturesConfig
from vocos_core.feature_extractors import MelSpectrogramFeatures

SR = 24000
FE = MelSpectrogramFeatures(MelSpectrogramFeaturesConfig())
FB = FE.mel_spec.mel_scale.fb.numpy()  # (513, 100)
WIN = FE.mel_spec.spectrogram.window


def mel(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return FE(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])[0].numpy()


def linear_mel(x: np.ndarray, power: int = 1) -> np.ndarray:
    """The un-logged mel: sum_k fb[k, m] |X_k|^power."""
    with torch.no_grad():
        a = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        spec = torch.stft(a, 1024, 256, window=WIN, center=True, pad_mode="reflect", return_complex=True).abs()
        return (spec[0] ** power).T.matmul(torch.from_numpy(FB)).T.numpy()


def peak(x, db):
    return (x / max(np.abs(x).max(), 1e-12) * 10 ** (db / 20)).astype(np.float32)


def noise(kind, n, rng):
    w = rng.standard_normal(n)
    if kind == "white":
        return w
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    alpha = {"pink": 0.5, "brown": 1.0, "blue": -0.5}[kind]
    return np.fft.irfft(np.fft.rfft(w) / f ** alpha, n)


def quantise16(x):
    return (np.round(np.clip(x, -1, 1) * 32767) / 32767).astype(np.float32)


def reverb(x, rng, t60=0.5):
    n = int(t60 * SR)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    ir[0] = 1.0
    size = len(x) + n - 1
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)
    return y[: len(x) + n // 2] / np.sqrt(np.sum(ir ** 2))


def music(rng, seconds=4.0):
    """A few notes of harmonic tones with vibrato and a percussive click track."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    for i in range(8):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        env = np.exp(-3 * np.maximum(t - i * seconds / 8, 0)) * (t >= i * seconds / 8)
        for h in range(1, 12):
            out += env * np.sin(2 * np.pi * h * f0 * t * (1 + 0.003 * np.sin(2 * np.pi * 5 * t))) / h
    clicks = np.zeros_like(t)
    clicks[:: SR // 4] = 1
    return out + 3 * np.convolve(clicks, rng.standard_normal(200) * np.exp(-np.arange(200) / 30))[: len(t)]


def real_variants(name, x, rng):
    """Real audio through the right front-end: (label, audio) pairs derived from one utterance."""
    x = x.astype(np.float64)
    for db in (0, -6, -12, -20, -30):
        yield f"{name}|peak{db}", peak(x, db)
    yield f"{name}|pcm16-30dB", quantise16(peak(x, -30))
    yield f"{name}|clip+12dB", np.clip(peak(x, 12), -1, 1)
    yield f"{name}|reverb", peak(reverb(x, rng), -3)
    for snr in (30, 10, 0):
        n = noise(("white", "pink", "brown")[snr % 3], len(x), rng)
        s = x / np.sqrt(np.mean(x ** 2)) + n / np.sqrt(np.mean(n ** 2)) * 10 ** (-snr / 20)
        yield f"{name}|snr{snr}", peak(s, -3)
    y = np.concatenate([np.zeros(SR), x, np.zeros(SR)])
    yield f"{name}|padded-silence", peak(y, -6)
    yield f"{name}|short", peak(x[len(x) // 2: len(x) // 2 + 1024], -6)
    q = quantise16(peak(x, -45))
    yield f"{name}|pcm16-45dB", q
    for i, (start, size) in enumerate(((0, 1024), (0, 4096), (len(x) - 3000, 3000), (len(x) // 3, 2048),
                                       (len(x) - 12000, 12000))):
        start = max(0, start)
        yield f"{name}|short{i}", peak(x[start:start + size], -6)
        yield f"{name}|short{i}-pcm16", q[start:start + size]


def other_real(rng):
    """Non-speech real audio: silence, noises, tones, music, clipping."""
    n = 3 * SR
    yield "silence", np.zeros(n, np.float32)
    yield "silence-short", np.zeros(600, np.float32)
    yield "dither", (rng.standard_normal(n) * 1e-5).astype(np.float32)
    yield "pcm16-lsb", quantise16(rng.standard_normal(n) * 2e-5)
    for kind in ("white", "pink", "brown", "blue"):
        for db in (0, -10, -20, -30, -40, -60, -80):
            yield f"noise-{kind}{db}", peak(noise(kind, n, rng), db)
    t = np.arange(n) / SR
    for f in (50, 440, 3000, 11000):
        for db in (0, -30):
            yield f"sine{f}{db}", peak(np.sin(2 * np.pi * f * t), db)
    yield "square-clipped", np.clip(10 * np.sin(2 * np.pi * 220 * t), -1, 1).astype(np.float32)
    yield "dc", np.full(n, 0.5, np.float32)
    yield "impulse", np.eye(1, n, n // 2)[0].astype(np.float32)
    for kind in ("white", "pink", "blue"):
        yield f"noise-{kind}-clipped+20dB", np.clip(peak(noise(kind, n, rng), 20), -1, 1)
    yield "chirp", peak(np.sin(2 * np.pi * (20 + 12000 * t / 6) * t), -3)
    for i in range(4):
        yield f"music{i}", peak(music(rng), -1 - 6 * i)


# ---- wrong front-ends applied to the same audio ------------------------------------------------
LN10 = np.log(10)


def wrong_front_ends(x, stats=None):
    """(label, expected cause, mel) for each wrong front-end of the audio ``x``."""
    lin = linear_mel(x).astype(np.float64)
    lin2 = linear_mel(x, power=2).astype(np.float64)
    ln = np.log(np.maximum(lin, 1e-7))
    db20 = 20 * np.log10(np.maximum(lin, 1e-5))
    db10 = 10 * np.log10(np.maximum(lin2, 1e-10))
    db_top = np.maximum(db20 - db20.max(), -80)  # librosa amplitude_to_db(ref=np.max, top_db=80)
    yield "db20", "db_scaled", db20
    yield "db10_power", "db_scaled", db10
    yield "db_ref_max_top80", "db_scaled", db_top
    yield "db_norm01", "normalized", (db_top + 80) / 80
    yield "db_norm11", "normalized", (db_top + 80) / 40 - 1
    # Tacotron / FastSpeech2 "symmetric" normalisation: ref_level_db 20, min_level_db -100, max_abs 4
    yield "tacotron_-4_4", "normalized", np.clip(8 * (db20 - 20 + 100) / 100 - 4, -4, 4)
    yield "log10", "log10", np.log10(np.maximum(lin, 1e-7))
    yield "log10_floor1e-5", "log10", np.log10(np.maximum(lin, 1e-5))
    yield "norm_utt", "normalized", (ln - ln.mean()) / ln.std()
    yield "norm_utt_band", "normalized", (ln - ln.mean(1, keepdims=True)) / (ln.std(1, keepdims=True) + 1e-5)
    if stats is not None:
        yield "norm_dataset_band", "normalized", (ln - stats[0][:, None]) / stats[1][:, None]
    yield "linear", "linear", lin
    yield "hifigan_floor", "wrong_floor", np.log(np.maximum(lin, 1e-5))
    yield "power2", "power2", np.log(np.maximum(lin2, 1e-7))


def slaney_filterbank(n_freqs=513, n_mels=100, sr=SR, fmin=0.0, fmax=None):
    """librosa.filters.mel(htk=False, norm="slaney"), as (n_freqs, n_mels)."""
    fmax = sr / 2 if fmax is None else fmax

    def hz2mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27), f / (200 / 3))

    def mel2hz(m):
        return np.where(m >= 15, 1000 * np.exp((np.log(6.4) / 27) * (m - 15)), m * 200 / 3)

    freqs = np.linspace(0, sr / 2, n_freqs)
    pts = mel2hz(np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2))
    fdiff = np.diff(pts)
    ramps = pts[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (pts[2:] - pts[:-2]))[:, None]
    return w.T.astype(np.float32)


SLANEY = torch.from_numpy(slaney_filterbank())


def hifigan_frontend_mel(x):
    """jik876/hifi-gan meldataset.mel_spectrogram at 24 kHz, 100 mels, fmax 12 kHz."""
    a = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    a = torch.nn.functional.pad(a, (384, 384), mode="reflect")[0]
    spec = torch.stft(a, 1024, 256, window=WIN, center=False, return_complex=True)
    mag = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)[0]
    return torch.log(torch.clamp(mag.T.matmul(SLANEY).T, min=1e-5)).numpy()


def more_wrong_front_ends(x):
    yield "hifigan_frontend", "wrong_floor", hifigan_frontend_mel(x)
    yield "int16_audio", "out_of_range", mel(np.clip(x, -1, 1) * 32767)


def periodic_mixes(x, rng):
    """Speech over stationary or hop-periodic sounds (identical frames), the hardest cases for exact rules."""
    x = peak(x, -6).astype(np.float64)
    n = len(x)
    t = np.arange(n) / SR
    clicks = np.zeros(n)
    clicks[::256] = 1.0
    loop = np.tile(rng.standard_normal(1024), n // 1024 + 1)[:n]
    beds = {
        "clicks256": clicks,
        "square93.75Hz": np.sign(np.sin(2 * np.pi * 93.75 * t + 0.1)),
        "looped_noise1024": loop / np.abs(loop).max(),
        "dc": np.ones(n),
        "hum50": np.sin(2 * np.pi * 50 * t),
        "sine1000": np.sin(2 * np.pi * 1000 * t),
    }
    for name, bed in beds.items():
        for db in (-40, -70):
            yield f"mix-{name}{db}", (x + bed * 10 ** (db / 20)).astype(np.float32)
        # the bed alone before the speech, then the speech in digital silence
        yield f"then-{name}", np.concatenate([bed[: SR // 2] * 1e-2, np.zeros(SR // 4), x]).astype(np.float32)
