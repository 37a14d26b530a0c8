#!/usr/bin/env python3
"""Driver of the streaming-vocos comparison in scripts/stream_load.py. NEEDS THE REFERENCE VENV (the
official ``vocos`` 0.1.0 package and torchaudio): run it with /work/ref-venv/bin/python, never from the
project's own environment.

It imports pengzhendong/streaming-vocos from the checkout given by ``--repo`` (none of its code is in
this repository), decodes ``--mel`` with the official package offline, and streams it through
``StreamingVocos`` (its defaults: chunks of 300 ms = 28 frames, 24 frames of context on each side,
batch 1), pushing the chunk sizes of ``--sizes``. Writes ``offline`` and ``streamed`` (float32 (S,))
to ``--out`` and prints one JSON line: cost (wall seconds per audio second) and the chunking.

    /work/ref-venv/bin/python scripts/stream_reference.py --repo /tmp/streaming-vocos --model DIR \
        --mel mel.npy --sizes 12,7,20 --out reference.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True, help="checkout of pengzhendong/streaming-vocos")
    p.add_argument("--model", required=True, help="mel checkpoint directory (config.yaml + pytorch_model.bin)")
    p.add_argument("--mel", required=True, help=".npy of the mel spectrogram (n_mels, T)")
    p.add_argument("--sizes", required=True, help="comma-separated frames per pushed chunk")
    p.add_argument("--out", required=True, help=".npz to write")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args()


def official_model(directory: Path) -> torch.nn.Module:
    """The official package's Vocos with the checkpoint's weights (what from_pretrained does, from a directory)."""
    import vocos

    model = vocos.Vocos.from_hparams(str(directory / "config.yaml"))
    state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, args.repo)
    from streaming_vocos import streaming_vocos

    model = official_model(Path(args.model))
    # StreamingVocos loads "charactr/vocos-mel-24khz" from the Hub unless its model cache has the key.
    streaming_vocos.vocos_models["mel-cpu"] = model
    streamer = streaming_vocos.StreamingVocos("mel", "cpu")
    mel = torch.from_numpy(np.load(args.mel))
    sizes = [int(x) for x in args.sizes.split(",")]
    _timed(lambda: model.decode(mel[None]))  # warm-up
    offline, offline_wall = _timed(lambda: model.decode(mel[None]))
    start, at, pieces = time.perf_counter(), 0, []
    for size in sizes:
        pieces += list(streamer.streaming_decode(mel[None, :, at:at + size]))
        at += size
    pieces.append(streamer.decode_caches())
    wall = time.perf_counter() - start
    streamed = torch.cat(pieces, dim=1)[0].numpy()
    np.savez(args.out, offline=offline[0].numpy(), streamed=streamed)
    seconds = streamed.size / 24000
    print(json.dumps({"cost": wall / seconds, "offline_cost": offline_wall / (offline.shape[1] / 24000),
                      "chunk_frames": streamer.chunk_size, "padding_frames": streamer.padding,
                      "threads": torch.get_num_threads(), "samples": int(streamed.size)}))
    return 0


def _timed(call):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
