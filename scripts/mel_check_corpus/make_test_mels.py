"""The CI fixture tests/data/speech_mels/speech_mels.npz: 9 real-speech log-mels, float16."""
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np

CORPUS = __import__("pathlib").Path(__file__).resolve().parent / "corpus.npz"
from common import mel, peak, quantise16  # noqa: E402

c = np.load(CORPUS)
PICK = [  # (corpus key prefix, peak dB, pcm16)
    ("001|espeak|en|", -1, False), ("007|espeak|en+f3|", -6, False), ("021|espeak|en+whisper|", -20, False),
    ("025|espeak|de|", -1, False), ("031|espeak|fr|", -12, False), ("040|espeak|es+f4|", -3, False),
    ("046|espeak|it+m2|", -30, True), ("048|festival|cmu_us_slt", -1, False), ("053|festival|kal", -6, True),
]
out = {}
for prefix, db, pcm in PICK:
    (key,) = [k for k in c.files if k.startswith(prefix)]
    x = c[key].astype(np.float64)[: 3 * 24000]
    y = peak(x, db)
    if pcm:
        y = quantise16(y)
    name = key.split("|")[1] + "_" + key.split("|")[2].replace("+", "_") + f"_peak{db}dB" + ("_pcm16" if pcm else "")
    out[name] = mel(y).astype(np.float16)
    print(name, out[name].shape, key)
np.savez_compressed(sys.argv[1], **out)
