"""The reference implementation's side of scripts/benchmark.py. Runs ONLY in the reference venv
(torch==2.11.0 torchaudio==2.11.0 vocos==0.1.0).

    REF_PYTHON scripts/bench_reference.py MEL_DIR ENCODEC_DIR
(TORCH_HOME must hold hub/checkpoints/encodec_24khz-d7cc33bc.th: the reference loads EnCodec from there.)

A worker: it loads both models once, prints ``ready``, then for each line ``CASE<TAB>REPEATS`` read
from stdin prints one JSON number, the median seconds of that case. The caller alternates it with
its own timings, so both sides see the same machine load.
"""

from __future__ import annotations

import json
import sys

import scipy.signal
import torch
from bench_cases import ENCODEC_BANDWIDTH_ID, inputs, time_call

# vocos 0.1.0 calls scipy.signal.cosine, which newer SciPy keeps only under scipy.signal.windows.
if not hasattr(scipy.signal, "cosine"):
    scipy.signal.cosine = scipy.signal.windows.cosine
from vocos import Vocos


def load(directory: str) -> Vocos:
    model = Vocos.from_hparams(f"{directory}/config.yaml")
    state = torch.load(f"{directory}/pytorch_model.bin", map_location="cpu")
    if hasattr(model.feature_extractor, "encodec"):
        enc = model.feature_extractor.encodec.state_dict()
        state.update({f"feature_extractor.encodec.{k}": v for k, v in enc.items()})
    model.load_state_dict(state)
    return model.eval()


def main() -> None:
    mel, enc, x = load(sys.argv[1]), load(sys.argv[2]), inputs()
    bw = torch.tensor([ENCODEC_BANDWIDTH_ID])
    cases = {
        "mel decode 10 s, batch 1": lambda: mel.decode(x["mel_b1"]),
        "mel decode 10 s, batch 8": lambda: mel.decode(x["mel_b8"]),
        "encodec decode 10 s (6 kbps), batch 1": lambda: enc.decode(enc.codes_to_features(x["codes_b1"]),
                                                                   bandwidth_id=bw),
        "encodec resynthesis 10 s (6 kbps)": lambda: enc(x["audio_10s"], bandwidth_id=bw),
    }
    print("ready", flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            case, repeats = line.rstrip("\n").split("\t")
            print(json.dumps(time_call(cases[case], int(repeats), "cpu")), flush=True)


if __name__ == "__main__":
    main()
