"""Synthesise a speech corpus offline (espeak-ng + festival), resample to 24 kHz with soxr.

Writes corpus.npz beside this script (kept out of git): one float32 array per utterance, keyed
"<n>|<engine>|<voice>|<speed>|<pitch>".
"""
import itertools
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

TEXTS = {
    "en": ["The quick brown fox jumps over the lazy dog near the river bank.",
           "Please call Stella and ask her to bring these things with her from the store.",
           "A neural vocoder turns a mel spectrogram back into a waveform, frame by frame.",
           "Seven silver swans swam silently southward, shimmering in the summer sun!",
           "Is it raining in Paris today, or will the weather clear up by tonight?"],
    "de": ["Der schnelle braune Fuchs springt über den faulen Hund.",
           "Heute Abend gehen wir zusammen ins Kino und danach essen.",
           "Können Sie mir bitte sagen, wie spät es ist?"],
    "fr": ["Le vif renard brun saute par-dessus le chien paresseux.",
           "Nous allons au marché demain matin pour acheter du pain frais.",
           "Quelle heure est-il, s'il vous plaît?"],
    "es": ["El veloz murciélago hindú comía feliz cardillo y kiwi.",
           "Mañana por la mañana vamos a la playa con toda la familia.",
           "¿Dónde está la estación de tren más cercana?"],
    "it": ["Quel vituperabile xenofobo zelante assaggia il whisky ed esclama alleluja.",
           "Domani andiamo al mare con gli amici e mangiamo una pizza.",
           "Scusi, sa dirmi dove si trova la stazione?"],
}
ESPEAK = [  # (voice, language of the text)
    ("en", "en"), ("en-us", "en"), ("en+f3", "en"), ("en+m7", "en"), ("en-gb-x-rp", "en"),
    ("en+f5", "en"), ("en-us+m3", "en"), ("en+whisper", "en"),
    ("de", "de"), ("de+f2", "de"), ("fr", "fr"), ("fr+m4", "fr"), ("es", "es"), ("es+f4", "es"),
    ("it", "it"), ("it+m2", "it"),
]
SPEEDS = [120, 175, 230]
PITCHES = [20, 50, 80]
FESTIVAL = ["cmu_us_slt_arctic_hts", "kal_diphone", "ked_diphone"]


def to24k(x: np.ndarray, sr: int) -> np.ndarray:
    if x.ndim > 1:
        x = x.mean(axis=1)
    return soxr.resample(x.astype(np.float64), sr, 24000, quality="VHQ").astype(np.float32)


def espeak(voice: str, text: str, speed: int, pitch: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", f.name, text], check=True)
        x, sr = sf.read(f.name, dtype="float32")
    return to24k(x, sr)


def festival(voice: str, text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f, tempfile.NamedTemporaryFile("w", suffix=".txt") as t:
        t.write(text)
        t.flush()
        subprocess.run(["text2wave", "-eval", f"(voice_{voice})", "-o", f.name, t.name], check=True)
        x, sr = sf.read(f.name, dtype="float32")
    return to24k(x, sr)


def main() -> None:
    out = {}
    n = 0
    combos = itertools.cycle(itertools.product(SPEEDS, PITCHES))
    for voice, lang in ESPEAK:
        for text in TEXTS[lang][:3]:
            speed, pitch = next(combos)
            out[f"{n:03d}|espeak|{voice}|{speed}|{pitch}"] = espeak(voice, text, speed, pitch)
            n += 1
    for voice in FESTIVAL:
        for text in TEXTS["en"]:
            out[f"{n:03d}|festival|{voice}|-|-"] = festival(voice, text)
            n += 1
    for voice in ("lp_diphone", "pc_diphone"):
        for text in TEXTS["it"]:
            out[f"{n:03d}|festival|{voice}|-|-"] = festival(voice, text)
            n += 1
    np.savez(Path(__file__).with_name("corpus.npz"), **out)
    print(n, "utterances,", sum(len(v) for v in out.values()) / 24000, "s")


if __name__ == "__main__":
    main()
