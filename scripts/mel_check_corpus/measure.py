"""Full-corpus measurement of vocos_core.mel_check: false alarms on real audio, detection per wrong front-end."""
import collections
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np
import torch

CORPUS = __import__("pathlib").Path(__file__).resolve().parent / "corpus.npz"
from common import mel, more_wrong_front_ends, noise, other_real, peak, periodic_mixes, real_variants, wrong_front_ends  # noqa: E402

from vocos_core.config import MelSpectrogramFeaturesConfig  # noqa: E402
from vocos_core.mel_check import check_mel, mel_front_end  # noqa: E402

FE = mel_front_end(MelSpectrogramFeaturesConfig())
print("front-end:", FE)
corpus = np.load(CORPUS)
rng = np.random.default_rng(0)
verbose = "-v" in sys.argv


def outcome(m):
    r = check_mel(m, FE)
    return ("impossible" if r.impossible else "warning" if r.warning else "ok"), r


# ---- real audio: zero warnings, zero impossibles ------------------------------------------------
real_n = collections.Counter()
alarms = []
clean = {}
for key in corpus.files:
    x = corpus[key].astype(np.float64)
    clean[key] = peak(x, -1)
    for label, y in list(real_variants(key, x, rng)) + [(f"{key}|{lab}", y) for lab, y in periodic_mixes(x, rng)]:
        m = mel(y)
        variants = {"": m, "|fp16": m.astype(np.float16)}
        for s in (0.1, 0.3):  # "predicted" mels: the right front-end plus regression noise
            variants[f"|pred{s}"] = (m + rng.normal(0, s, m.shape)).astype(np.float32)
        for suffix, mm in variants.items():
            kind, r = outcome(mm)
            real_n[kind] += 1
            if kind != "ok":
                alarms.append((label + suffix, r))
for label, y in other_real(rng):
    m = mel(y)
    for suffix, mm in {"": m, "|fp16": m.astype(np.float16)}.items():
        kind, r = outcome(mm)
        real_n[kind] += 1
        if kind != "ok":
            alarms.append((label + suffix, r))
print(f"\nREAL: {sum(real_n.values())} mels ({len(corpus.files)} utterances x variants + other audio): {dict(real_n)}")
for a in alarms:
    print("  FALSE ALARM", a)

# ---- wrong front-ends ----------------------------------------------------------------------------
floored = {k: x + peak(noise("white", len(x), rng), -61) for k, x in clean.items()}
stats = {}
for floor_name, audio in (("clean", clean), ("noisefloor", floored)):  # per-band dataset statistics
    lns = np.concatenate([mel(x) for x in audio.values()], axis=1)
    stats[floor_name] = (lns.mean(1), np.maximum(lns.std(1), 0.1))
table = collections.defaultdict(collections.Counter)
for key, x in clean.items():
    for db in (-1, -12, -30):
        for floor_name, y in (("clean", peak(x, db)), ("noisefloor", peak(floored[key], db))):
            items = list(wrong_front_ends(y, stats[floor_name])) + list(more_wrong_front_ends(y))
            for label, cause, m in items:
                pred = (m + rng.normal(0, 0.1 * max(np.std(m), 1e-3) / 2, m.shape)).astype(np.float32)
                for suffix, mm in {"": m, "|fp16": m.astype(np.float16), "|pred": pred}.items():
                    if suffix == "|fp16" and np.abs(m).max() > 6e4:
                        continue
                    kind, r = outcome(mm.astype(np.float32) if mm.dtype == np.float64 else mm)
                    row = f"{label}|{floor_name}" + ("|predicted" if suffix == "|pred" else "")
                    hit = kind != "ok" and r.cause == cause
                    table[row]["n"] += 1
                    table[row]["detected" if hit else "other cause" if kind != "ok" else "missed"] += 1
                    table[row][kind] += 1
                    if verbose and not hit:
                        print(row, key, db, suffix, kind, r.cause)
print("\nWRONG FRONT-ENDS (69 utterances x 3 gains x {float32, float16};"
      " |predicted: float32 + noise, 5% of the mel's std):")
print(f"{'transform|audio':30s} {'n':>4s} {'flagged':>8s} {'right cause':>11s} {'other cause':>11s} {'missed':>6s} "
      f"{'impossible':>10s} {'warning':>8s}")
for row in sorted(table):
    c = table[row]
    flagged = c['detected'] + c['other cause']
    print(f"{row:30s} {c['n']:4d} {flagged / c['n']:8.1%} {c['detected'] / c['n']:11.1%} {c['other cause']:11d} "
          f"{c['missed']:6d} {c['impossible']:10d} {c['warning']:8d}")

# ---- speed ---------------------------------------------------------------------------------------
x = np.concatenate(list(clean.values()))[: 10 * 24000]
m10 = torch.from_numpy(mel(x))
torch.set_num_threads(1)
for name, mm in (("real", m10), ("log10", m10 / np.log(10)), ("linear", m10.exp())):
    check_mel(mm, FE)
    ts = []
    for _ in range(200):
        t0 = time.perf_counter()
        check_mel(mm, FE)
        ts.append(time.perf_counter() - t0)
    median, p99 = np.median(ts) * 1e6, np.percentile(ts, 99) * 1e6
    print(f"speed {name} {tuple(mm.shape)}: median {median:.0f} us, p99 {p99:.0f} us")
