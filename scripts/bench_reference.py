"""The reference implementation's side of scripts/benchmark.py. Runs ONLY in the reference venv
(torch==2.11.0 torchaudio==2.11.0 vocos==0.1.0, and onnxruntime + onnx for the ONNX Runtime column).

    REF_PYTHON scripts/bench_reference.py MEL_DIR ENCODEC_DIR
(TORCH_HOME must hold hub/checkpoints/encodec_24khz-d7cc33bc.th: the reference loads EnCodec from there.)

A worker: it loads both models once, exports them to ONNX (see :class:`OnnxModels`), prints one
line ``ready {JSON}`` (the JSON says why ONNX Runtime is not timed, or null when it is), then for
each line ``CASE<TAB>REPEATS[<TAB>STATISTIC]`` read from stdin prints one JSON number, the median
(or the STATISTIC, bench_cases.STATISTICS) seconds of that case, and for ``error<TAB>CASE`` the
relative error of ONNX Runtime against the reference on that case (:func:`relative_error`). Cases
of the ONNX Runtime column are the reference's names prefixed ``onnxruntime: ``. The caller
alternates it with its own timings, so every side sees the same load.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import scipy.signal
import torch
from bench_cases import ENCODEC_BANDWIDTH_ID, inputs, time_call

# vocos 0.1.0 calls scipy.signal.cosine, which newer SciPy keeps only under scipy.signal.windows.
if not hasattr(scipy.signal, "cosine"):
    scipy.signal.cosine = scipy.signal.windows.cosine
from vocos import Vocos

ONNX_PREFIX = "onnxruntime: "


def load(directory: str) -> Vocos:
    model = Vocos.from_hparams(f"{directory}/config.yaml")
    state = torch.load(f"{directory}/pytorch_model.bin", map_location="cpu")
    if hasattr(model.feature_extractor, "encodec"):
        enc = model.feature_extractor.encodec.state_dict()
        state.update({f"feature_extractor.encodec.{k}": v for k, v in enc.items()})
    model.load_state_dict(state)
    return model.eval()


class Spectrum(torch.nn.Module):
    """Backbone + the ISTFT head's projection and polar form: features -> (real, imaginary) ``(B, F, T)``;
    what users export, leaving the inverse FFT (which ONNX lacks) to torch."""

    def __init__(self, model: Vocos) -> None:
        super().__init__()
        self.backbone, self.out = model.backbone, model.head.out

    def forward(self, features: torch.Tensor, bandwidth_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.out(self.backbone(features, bandwidth_id=bandwidth_id)).transpose(1, 2)  # (B, T, 2F) -> (B, 2F, T)
        mag, p = x.chunk(2, dim=1)
        mag = torch.clip(torch.exp(mag), max=1e2)
        return mag * torch.cos(p), mag * torch.sin(p)


class OnnxModels:
    """The reference models exported with ``torch.onnx.export`` and run by ONNX Runtime: the spectrum
    graph of each model, and for resynthesis the EnCodec encoder's graph (its quantizer and the ISTFT
    stay in torch)."""

    def __init__(self, mel: Vocos, enc: Vocos, directory: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # As many threads as torch has on both sides (OMP_NUM_THREADS, inherited from the benchmark).
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        self.mel, self.enc, self.bw = mel, enc, torch.tensor([ENCODEC_BANDWIDTH_ID])
        x = inputs()
        sessions = {}
        spectrum_inputs = ["features", "bandwidth_id"]
        for name, module, args, names in (
            ("mel", Spectrum(mel), (x["mel_b1"], self.bw), spectrum_inputs),
            ("enc", Spectrum(enc), (enc.codes_to_features(x["codes_b1"]).clone(), self.bw), spectrum_inputs),
            ("encoder", enc.feature_extractor.encodec.encoder, (x["audio_10s"][:, None],), ["audio"]),
        ):
            path = directory / f"{name}.onnx"
            axes = {n: {0: "batch", 2: "time"} for n in names if n != "bandwidth_id"}
            with torch.no_grad():  # codes_to_features returns an inference tensor: cloned above, traced here
                torch.onnx.export(module, args, str(path), input_names=names, dynamic_axes=axes, dynamo=False)
            sessions[name] = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.sessions = sessions

    def decode(self, name: str, features: torch.Tensor) -> torch.Tensor:
        session = self.sessions[name]
        feed = {"features": features.numpy()}
        if len(session.get_inputs()) > 1:  # the mel graph may have dropped the unused bandwidth id
            feed["bandwidth_id"] = self.bw.numpy()
        re, im = session.run(None, feed)
        model = self.mel if name == "mel" else self.enc
        return model.head.istft(torch.complex(torch.from_numpy(re), torch.from_numpy(im)))

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """The EnCodec encoder's latents ``(B, 128, T)`` of audio ``(B, S)``."""
        return torch.from_numpy(self.sessions["encoder"].run(None, {"audio": audio[:, None].numpy()})[0])

    def resynthesize(self, audio: torch.Tensor) -> torch.Tensor:
        encodec = self.enc.feature_extractor.encodec
        encodec.set_target_bandwidth(self.enc.feature_extractor.bandwidths[ENCODEC_BANDWIDTH_ID])
        emb = self.encode(audio)
        codes = encodec.quantizer.encode(emb, encodec.frame_rate, encodec.bandwidth)
        return self.decode("enc", self.enc.codes_to_features(codes))


def cases_of(mel: Vocos, enc: Vocos, onnx: OnnxModels | None) -> dict[str, Callable[[], torch.Tensor]]:
    x, bw = inputs(), torch.tensor([ENCODEC_BANDWIDTH_ID])
    cases = {
        "mel decode 10 s, batch 1": lambda: mel.decode(x["mel_b1"]),
        "mel decode 10 s, batch 8": lambda: mel.decode(x["mel_b8"]),
        "encodec decode 10 s (6 kbps), batch 1": lambda: enc.decode(enc.codes_to_features(x["codes_b1"]),
                                                                   bandwidth_id=bw),
        "encodec resynthesis 10 s (6 kbps)": lambda: enc(x["audio_10s"], bandwidth_id=bw),
    }
    if onnx is not None:
        cases.update({
            ONNX_PREFIX + "mel decode 10 s, batch 1": lambda: onnx.decode("mel", x["mel_b1"]),
            ONNX_PREFIX + "mel decode 10 s, batch 8": lambda: onnx.decode("mel", x["mel_b8"]),
            ONNX_PREFIX + "encodec decode 10 s (6 kbps), batch 1": lambda: onnx.decode(
                "enc", enc.codes_to_features(x["codes_b1"])),
            ONNX_PREFIX + "encodec resynthesis 10 s (6 kbps)": lambda: onnx.resynthesize(x["audio_10s"]),
        })
    return cases


def relative_error(cases: dict[str, Callable[[], torch.Tensor]], case: str, enc: Vocos, onnx: OnnxModels) -> float:
    """max |ONNX Runtime - reference| / max |reference| on ``case``; for resynthesis, of the encoder's
    latents: the codes quantised from them flip wherever a latent is near a codebook boundary."""
    if "resynthesis" in case:
        audio = inputs()["audio_10s"]
        ref, out = enc.feature_extractor.encodec.encoder(audio[:, None]), onnx.encode(audio)
    else:
        ref, out = cases[case](), cases[ONNX_PREFIX + case]()
    return float((out - ref).abs().max() / ref.abs().max())


def main() -> None:
    mel, enc = load(sys.argv[1]), load(sys.argv[2])
    onnx, reason = None, None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            onnx = OnnxModels(mel, enc, Path(tmp))
        except ImportError as exc:
            reason = f"onnxruntime is not installed in the reference venv ({exc})"
    cases = cases_of(mel, enc, onnx)
    print("ready", json.dumps(reason), flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            case, arg, *statistic = line.rstrip("\n").split("\t")
            if case == "error":
                assert onnx is not None, "no ONNX Runtime: no error to tell"
                print(json.dumps(relative_error(cases, arg, enc, onnx)), flush=True)
            else:
                print(json.dumps(time_call(cases[case], int(arg), "cpu", *statistic)), flush=True)


if __name__ == "__main__":
    main()
