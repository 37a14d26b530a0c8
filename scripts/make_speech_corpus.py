"""Make a small synthetic speech corpus offline, for the demo training run (docs/training.md).

Sentences are drawn by a seeded generator from a fixed vocabulary and spoken by Debian's festival
voices (``festvox-us-slt-hts``, ``festvox-kallpc16k``, ``festvox-kdlpc16k``) and several
``espeak-ng`` voices, resampled with soxr to the model rate and written as 16-bit mono WAV. The
held-out set has its own sentences (no sentence is in both sets), spoken by the same voices.

    python scripts/make_speech_corpus.py OUT_DIR [--train 240] [--val 24] [--sample-rate 24000]

writes ``OUT_DIR/wav/*.wav``, ``OUT_DIR/filelist.train`` and ``OUT_DIR/filelist.val`` (absolute paths,
as the reference's ``find ... -name *.wav > filelist.train``). Needs ``espeak-ng`` and/or ``text2wave``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

FESTIVAL_VOICES = ("cmu_us_slt_arctic_hts", "kal_diphone", "ked_diphone")
ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland+m4", "en-029+f2", "en-gb-x-rp+m2")

SUBJECTS = ("the old man", "a young girl", "my brother", "the small dog", "our teacher", "the farmer",
            "a tired sailor", "the quiet neighbour", "every student", "the baker", "her mother", "the pilot")
VERBS = ("carried", "painted", "found", "watched", "repaired", "borrowed", "followed", "described",
         "measured", "opened", "cleaned", "remembered", "delivered", "counted")
OBJECTS = ("a wooden box", "the red door", "seven bright lamps", "the heavy basket", "a map of the river",
           "the broken clock", "two silver coins", "the garden fence", "a letter from home", "the long bridge",
           "a bowl of soup", "the yellow kite")
PLACES = ("near the station", "before dinner", "in the morning", "after the storm", "behind the school",
          "on a cold evening", "beside the lake", "at the market", "under the old tree", "during the summer")
ENDINGS = ("and then went home.", "without a single word.", "while the rain kept falling.",
           "because nobody else would.", "and laughed about it later.", "as the sun went down.")
QUESTIONS = ("Why did {s} leave so early?", "Where is {o} now?", "Who {v} {o} {p}?",
             "Could {s} have {v} {o}?", "How many times has {s} seen {o}?")


def sentences(n: int, rng: random.Random, exclude: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        s, v, o, p = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(PLACES)
        if rng.random() < 0.25:
            text = rng.choice(QUESTIONS).format(s=s, v=v, o=o, p=p)
        else:
            text = f"{s.capitalize()} {v} {o} {p}, {rng.choice(ENDINGS)}"
        if text not in exclude:
            exclude.add(text)
            out.append(text)
    return out


def available_voices() -> list[tuple[str, str]]:
    voices: list[tuple[str, str]] = []
    if shutil.which("text2wave"):
        installed = {p.name for p in Path("/usr/share/festival/voices").glob("*/*")}
        voices += [("festival", v) for v in FESTIVAL_VOICES if v in installed]
    if shutil.which("espeak-ng"):
        voices += [("espeak", v) for v in ESPEAK_VOICES]
    if not voices:
        raise SystemExit("neither espeak-ng nor festival's text2wave is installed")
    return voices


def speak(engine: str, voice: str, text: str, wav: Path) -> None:
    if engine == "festival":
        subprocess.run(["text2wave", "-o", str(wav), "-eval", f"(voice_{voice})"], input=text, text=True,
                       check=True, capture_output=True)
    else:
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text], check=True, capture_output=True)


def render(engine: str, voice: str, text: str, out: Path, sample_rate: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        speak(engine, voice, text, raw)
        audio, sr = sf.read(raw, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate, quality="VHQ")
    sf.write(out, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--train", type=int, default=240, help="training utterances")
    ap.add_argument("--val", type=int, default=24, help="held-out utterances")
    ap.add_argument("--sample-rate", type=int, default=24000)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    voices = available_voices()
    seen: set[str] = set()
    splits = {"val": sentences(args.val, rng, seen), "train": sentences(args.train, rng, seen)}
    wav_dir = args.out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for split, texts in splits.items():
        paths = []
        for i, text in enumerate(texts):
            engine, voice = voices[i % len(voices)]
            path = wav_dir / f"{split}_{i:04d}_{voice.replace('+', '_')}.wav"
            render(engine, voice, text, path, args.sample_rate)
            paths.append(str(path.resolve()))
        # One path a line; no paths, an empty file (not one empty line, which a reader takes for a path).
        (args.out_dir / f"filelist.{split}").write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")
        print(f"{split}: {len(paths)} utterances, {len(voices)} voices")


if __name__ == "__main__":
    main()
