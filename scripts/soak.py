"""Soak test: drive a local vocos-serve with mixed concurrent requests and check every answer.

    python3 scripts/soak.py                                  # 32 clients for 5 minutes
    python3 scripts/soak.py --clients 8 --duration 20        # a quick run

Starts ``python -m service`` on a free loopback port with random-weight checkpoints (or the ones
given), then runs ``--clients`` concurrent clients until ``--duration`` seconds have passed, and
stops the server with SIGTERM. Requests mix every endpoint (mel JSON/.npy, EnCodec tokens at every
bandwidth, resynthesis through both models), body types and lengths. Every request comes from a
pool of distinct deterministic inputs whose solo output (``decode`` on that input alone) the script
computes first; an input is never sent by two clients at once, so a response carrying another
request's audio, or none, cannot pass unnoticed. Answers are float32 WAV, compared at 1e-5 of the
expected peak.

Prints requests served, status codes (5xx goal 0), matched / mismatched responses (goal: all
match), client-side p50/p99 latency, the peak of ``vocos_queue_depth`` (sampled from /metrics twice
a second) and the server's RSS growth after warm-up (goal under 5 %): the median of RSS samples
(twice a second) over the last tenth of the run against the median over the tenth just after the
warm-up. Exits 1 when a goal is missed. Network: 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch

from service.testing import ServerProcess, audio_file, npy_bytes, sigterm_exits
from vocos_core import Vocos, matmul_ways
from vocos_core.encodec.testing import write_random_encodec_weights
from vocos_core.testing import write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 24000
RTOL = 1e-5
RSS_GOAL = 0.05


@dataclass
class Case:
    """One deterministic request and the audio it must produce, ``expected`` ``(S,)`` float32."""

    name: str
    path: str
    body: bytes
    content_type: str
    expected: np.ndarray = field(repr=False)


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    matched: int = 0
    mismatched: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    by_case: Counter[str] = field(default_factory=Counter)


# -- inputs and their expected audio -----------------------------------------------------------------


def json_body(key: str, array: np.ndarray) -> bytes:
    # Hand-formatted with repr-exact floats so the server parses exactly the values decoded here.
    rows = ",".join("[" + ",".join(repr(float(v)) if array.dtype.kind == "f" else str(int(v)) for v in row) + "]"
                    for row in array)
    return f'{{"{key}": [{rows}]}}'.encode()


def frames_for(rng: np.random.Generator, low: int, high: int) -> int:
    """Log-uniform lengths: mostly short requests, a few long ones, as TTS traffic looks."""
    return int(np.exp(rng.uniform(np.log(low), np.log(high))))


def mel_case(model: Vocos, rng: np.random.Generator, index: int, max_frames: int) -> Case:
    t = frames_for(rng, 16, max_frames)
    mel = (rng.standard_normal((model.n_features, t)) * 1.5 - 3.0).astype(np.float32)
    expected = model.decode(torch.from_numpy(mel)[None])[0].numpy()
    as_json = index % 2 == 0
    body = json_body("mel", mel) if as_json else npy_bytes(mel)
    kind = "application/json" if as_json else "application/x-npy"
    return Case(f"mel-{'json' if as_json else 'npy'}", "/decode/mel", body, kind, expected)


def encodec_case(model: Vocos, rng: np.random.Generator, index: int, max_frames: int) -> Case:
    bandwidth_id = index % len(model.bandwidths)
    t = frames_for(rng, 8, max_frames)
    codes = rng.integers(0, 1024, (model.num_codebooks(bandwidth_id), t)).astype(np.int64)
    expected = model.decode_codes(torch.from_numpy(codes), bandwidth_id)[0].numpy()
    as_json = index % 3 != 0
    body = json_body("codes", codes) if as_json else npy_bytes(codes)
    kind = "application/json" if as_json else "application/x-npy"
    path = f"/decode/encodec?bandwidth_id={bandwidth_id}" if index % 2 else "/decode/encodec"  # else from K
    return Case(f"encodec-{'json' if as_json else 'npy'}", path, body, kind, expected)


def resynthesis_case(model: Vocos, rng: np.random.Generator, index: int, max_seconds: float) -> Case:
    seconds = rng.uniform(0.3, max_seconds)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = rng.uniform(100, 400)
    audio = (0.3 * np.sin(2 * np.pi * pitch * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    bandwidth_id = index % len(model.bandwidths) if model.bandwidths else None
    with torch.inference_mode():
        features = model.audio_to_features(torch.from_numpy(audio), bandwidth_id)  # (1, C, T)
    decoded = model.decode(features, bandwidth_id)[0].numpy()
    # The service answers the upload's duration exactly: the vocoder's output padded or trimmed to it.
    expected = np.pad(decoded, (0, max(0, audio.size - decoded.size)))[: audio.size]
    query = f"model={model.kind}" + (f"&bandwidth_id={bandwidth_id}" if bandwidth_id is not None else "")
    body = audio_file(audio, SAMPLE_RATE, "WAV", "FLOAT")
    return Case(f"resynthesize-{model.kind}", f"/resynthesize?{query}", body, "audio/wav", expected)


def build_cases(mel: Vocos, encodec: Vocos, count: int, seed: int, max_frames: int) -> list[Case]:
    """``count`` distinct requests: 40 % mel, 40 % EnCodec tokens, 20 % resynthesis (both models)."""
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        slot = index % 10
        if slot < 4:
            cases.append(mel_case(mel, rng, index, max_frames))
        elif slot < 8:
            cases.append(encodec_case(encodec, rng, index, max_frames))
        else:
            cases.append(resynthesis_case(mel if slot == 8 else encodec, rng, index, 3.0))
    return cases


def check_audio(content: bytes, expected: np.ndarray) -> str | None:
    """None when ``content`` (a float32 WAV) is ``expected`` within RTOL of its peak, else why not."""
    try:
        got, rate = sf.read(io.BytesIO(content), dtype="float32")
    except (sf.LibsndfileError, RuntimeError) as exc:
        return f"not a WAV file ({exc})"
    if rate != SAMPLE_RATE or got.shape != expected.shape:
        return f"shape {got.shape} at {rate} Hz, expected {expected.shape} at {SAMPLE_RATE} Hz"
    error = float(np.max(np.abs(got - expected)))
    bound = RTOL * max(1e-3, float(np.max(np.abs(expected))))
    return None if error <= bound else f"max abs error {error:.3g} > {bound:.3g}"


# -- the server ---------------------------------------------------------------------------------------


def start_server(args: argparse.Namespace) -> ServerProcess:
    return ServerProcess([
        "--device", "cpu", "--mel-model", str(args.mel_model), "--encodec-model", str(args.encodec_model),
        "--encodec-weights", str(args.encodec_weights), "--log-level", "warning",
        "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
        "--cpu-matmul", args.cpu_matmul,
    ], log=None)  # fmt: skip


def queue_depth(metrics_text: str) -> float:
    """Sum of ``vocos_queue_depth`` over models in a /metrics exposition."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith("vocos_queue_depth{"))


# -- load -----------------------------------------------------------------------------------------------


async def client_loop(client: httpx.AsyncClient, cases: list[Case], free: asyncio.Queue[int],
                      stop_at: float, tally: Tally) -> None:
    """Send requests until ``stop_at``, each with an input no other client is sending at the time."""
    while time.monotonic() < stop_at:
        index = await free.get()
        case = cases[index]
        request_id = f"soak-{index}-{time.monotonic_ns()}"
        separator = "&" if "?" in case.path else "?"
        start = time.monotonic()
        try:
            response = await client.post(
                f"{case.path}{separator}format=wav32f", content=case.body,
                headers={"content-type": case.content_type, "x-request-id": request_id},
            )
        except httpx.TransportError as exc:
            tally.transport_errors.append(f"{case.name}: {type(exc).__name__}: {exc}")
            continue
        finally:
            free.put_nowait(index)
        tally.latencies.append(time.monotonic() - start)
        tally.statuses[response.status_code] += 1
        tally.by_case[case.name] += 1
        if response.status_code != 200:
            tally.mismatched.append(f"{case.name}: status {response.status_code}: {response.text[:200]}")
            continue
        problem = check_audio(response.content, case.expected)
        if response.headers.get("x-request-id") != request_id:
            problem = f"X-Request-Id {response.headers.get('x-request-id')!r}, sent {request_id!r}"
        if problem is None:
            tally.matched += 1
        else:
            tally.mismatched.append(f"{case.name} (input {index}): {problem}")


@dataclass
class Monitor:
    """Queue depth and server memory sampled while the load runs (RSS as (seconds into the run, bytes))."""

    peak_queue: float = 0.0
    rss: list[tuple[float, int]] = field(default_factory=list)

    def rss_between(self, start: float, stop: float) -> float:
        """Median RSS of the samples taken in [start, stop) seconds: one sample is at the mercy of the
        batch computing at that instant, the median of a window is not."""
        window = [rss for t, rss in self.rss if start <= t < stop]
        return float(np.median(window)) if window else float("nan")


async def monitor_loop(client: httpx.AsyncClient, server: ServerProcess, stop_at: float, monitor: Monitor) -> None:
    start = time.monotonic()
    while time.monotonic() < stop_at:
        try:
            response = await client.get("/metrics")
            monitor.peak_queue = max(monitor.peak_queue, queue_depth(response.text))
        except httpx.TransportError:
            pass
        monitor.rss.append((time.monotonic() - start, server.rss_bytes()))
        await asyncio.sleep(0.5)


async def drive(args: argparse.Namespace, cases: list[Case], server: ServerProcess) -> tuple[Tally, Monitor, float]:
    limits = httpx.Limits(max_connections=args.clients + 2, max_keepalive_connections=args.clients + 2)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        free: asyncio.Queue[int] = asyncio.Queue()
        for index in np.random.default_rng(args.seed).permutation(len(cases)):
            free.put_nowait(int(index))
        tally, monitor = Tally(), Monitor()
        start = time.monotonic()
        stop_at = start + args.duration
        await asyncio.gather(
            monitor_loop(client, server, stop_at, monitor),
            *(client_loop(client, cases, free, stop_at, tally) for _ in range(args.clients)),
        )
        return tally, monitor, time.monotonic() - start


# -- report ----------------------------------------------------------------------------------------------


def memory_windows(args: argparse.Namespace, elapsed: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The window just after warm-up and the last one, each a tenth of the measured part (at least 5 s)."""
    warm = min(args.warmup, elapsed / 2)
    width = max(5.0, (elapsed - warm) / 10)
    return (warm, warm + width), (elapsed - width, elapsed + 1)


def report(args: argparse.Namespace, tally: Tally, monitor: Monitor, elapsed: float, exit_code: int | None) -> bool:
    """Print the figures; True when every goal is met."""
    served = sum(tally.statuses.values())
    errors_5xx = sum(n for status, n in tally.statuses.items() if status >= 500)
    latencies = np.array(tally.latencies) if tally.latencies else np.zeros(1)
    (w0, w1), (e0, e1) = memory_windows(args, elapsed)
    rss_warm, rss_end = monitor.rss_between(w0, w1), monitor.rss_between(e0, e1)
    growth = rss_end / rss_warm - 1
    rss_peak = max((rss for _, rss in monitor.rss), default=0)
    step = max(1, len(monitor.rss) // 10)
    mib = 1024 * 1024
    lines = [
        f"soak: {args.clients} clients for {elapsed:.1f} s against 127.0.0.1 "
        f"(max_batch_size {args.max_batch_size}, max_wait_ms {args.max_wait_ms:g}, pool of {args.pool} inputs)",
        f"requests served           {served} ({served / elapsed:.1f}/s)",
        f"by kind                   {', '.join(f'{k} {n}' for k, n in sorted(tally.by_case.items()))}",
        f"status codes              {', '.join(f'{s}: {n}' for s, n in sorted(tally.statuses.items()))}",
        f"5xx responses             {errors_5xx} (goal 0)",
        f"transport errors          {len(tally.transport_errors)} (goal 0)",
        f"matched own request       {tally.matched} of {served} (goal: all; mismatched {len(tally.mismatched)})",
        f"latency p50 / p99 / max   {np.percentile(latencies, 50) * 1000:.0f} / "
        f"{np.percentile(latencies, 99) * 1000:.0f} / {latencies.max() * 1000:.0f} ms",
        f"peak queue depth          {monitor.peak_queue:.0f} (sampled every 0.5 s from /metrics)",
        f"server RSS (median)       {rss_warm / mib:.1f} MiB in {w0:.0f}-{w1:.0f} s (after warm-up), "
        f"{rss_end / mib:.1f} MiB in {e0:.0f}-{elapsed:.0f} s; peak {rss_peak / mib:.1f} MiB",
        f"RSS timeline (s: MiB)     {', '.join(f'{t:.0f}: {r / mib:.0f}' for t, r in monitor.rss[::step])}",
        f"memory growth             {growth * 100:+.2f} % after warm-up (goal under {RSS_GOAL * 100:.0f} %)",
        f"server exit on SIGTERM    {exit_code} (goal 0)",
    ]
    print("\n".join(lines))
    for problem in (tally.mismatched + tally.transport_errors)[:10]:
        print(f"  problem: {problem}")
    return (errors_5xx == 0 and not tally.mismatched and not tally.transport_errors and served > 0
            and tally.matched == served and growth < RSS_GOAL and exit_code == 0)


def prepare_models(args: argparse.Namespace, workdir: Path) -> tuple[Vocos, Vocos]:
    """Random checkpoints unless given; the same files the server loads compute the expected audio."""
    if args.mel_model is None:
        args.mel_model = write_random_checkpoint(workdir / "mel", "mel", dim=args.dim, num_layers=args.layers)
    if args.encodec_model is None:
        args.encodec_model = write_random_checkpoint(workdir / "encodec", "encodec", dim=args.dim,
                                                     num_layers=args.layers)
    if args.encodec_weights is None:
        args.encodec_weights = write_random_encodec_weights(workdir / "encodec_24khz.th")
    mel = Vocos.from_pretrained(str(args.mel_model)).eval()
    encodec = Vocos.from_pretrained(str(args.encodec_model), encodec_weights=str(args.encodec_weights)).eval()
    # The server's matmuls, for the expected audio too (a forced way: auto might probe differently).
    matmul_ways.set_way(matmul_ways.ALIASES.get(args.cpu_matmul, args.cpu_matmul))
    return mel, encodec


def default_way() -> str:
    """bf16x3 where it runs (the server default there before auto existed), else onednn."""
    return next(w for w in ("bf16x3", "onednn", "mkl") if matmul_ways.unsupported_reason(w) is None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds of load before the reference RSS sample (default 30; at most half the run)")
    parser.add_argument("--pool", type=int, default=160, help="distinct inputs (must exceed --clients)")
    parser.add_argument("--max-frames", type=int, default=600, help="longest feature sequence of an input")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=128, help="width of the random models (default 128)")
    parser.add_argument("--layers", type=int, default=4, help="ConvNeXt layers of the random models (default 4)")
    parser.add_argument("--mel-model", type=Path, help="local mel checkpoint directory (default: random)")
    parser.add_argument("--encodec-model", type=Path, help="local EnCodec checkpoint directory (default: random)")
    parser.add_argument("--encodec-weights", type=Path, help="EnCodec encoder weights (default: random)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--cpu-matmul", choices=[*matmul_ways.WAYS, *matmul_ways.ALIASES], default=default_way(),
                        help="the server's float32 matmuls, forced (default: bf16x3 where it runs, else onednn); "
                        "the expected audio uses the same")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    way = matmul_ways.ALIASES.get(args.cpu_matmul, args.cpu_matmul)
    if (reason := matmul_ways.unsupported_reason(way)) is not None:  # type: ignore[arg-type]
        parser.error(f"--cpu-matmul {args.cpu_matmul} cannot run here: {reason}")
    if args.pool <= args.clients:
        parser.error("--pool must exceed --clients so that no two clients send the same input at once")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Same intra-op thread count as the server: EnCodec's quantizer picks a code by argmin, and a
    # near tie can fall the other way when a different thread count reorders a float reduction.
    # sigterm_exits: SIGTERM stops the server and removes the models as Ctrl-C does.
    with sigterm_exits(), tempfile.TemporaryDirectory(prefix="vocos-soak-") as tmp:
        mel, encodec = prepare_models(args, Path(tmp))
        server = start_server(args)
        try:
            try:
                server.wait_ready(args.startup_timeout)
            except AssertionError as exc:
                raise SystemExit(f"soak: {exc}") from None
            started = time.monotonic()
            with torch.inference_mode():
                cases = build_cases(mel, encodec, args.pool, args.seed, args.max_frames)
            print(f"soak: {len(cases)} inputs and their solo outputs ready in {time.monotonic() - started:.1f} s",
                  flush=True)
            tally, monitor, elapsed = asyncio.run(drive(args, cases, server))
        finally:
            exit_code = server.terminate(timeout=60)
    return 0 if report(args, tally, monitor, elapsed, exit_code) else 1


if __name__ == "__main__":
    sys.exit(main())
