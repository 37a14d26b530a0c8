#!/usr/bin/env python3
"""Streaming load: N concurrent WebSocket streams fed by a simulated TTS, against a server this script starts.

Each stream's "TTS" produces the frames of one mel spectrogram at ``--rate`` x real time (real time =
sample_rate / hop frames per second), in chunks of 5-20 frames (random), and sends each chunk once its
last frame is due; the audio comes back through ``vocos_client.AsyncClient``. Printed:

- time to first audio (from the stream's start, so it includes producing the lookahead's frames);
- chunk latency: a chunk sent -> the audio it makes final received (final = all samples before
  ``frames_in * hop - lookahead_samples``, so this is latency beyond the lookahead);
- underruns: a stream whose player, started at its first audio with a jitter buffer of ``--buffer-ms``
  (default: the longest TTS chunk, which even a zero-latency server needs, plus 100 ms), would have run
  dry (and the buffer each stream needed: ``max_k(t_k - t_first - samples_before_k / sr)``);
- with ``--find-max``: the largest N in ``--find-max-streams`` with no underrun;
- throughput: offline (POST /decode/mel of the same mels, ``--offline-concurrency`` at once) and streaming
  (``--streams`` streams fed as fast as possible), in audio seconds per wall second, and their ratio;
- with ``--reference DIR`` (a checkout of pengzhendong/streaming-vocos): its error against the offline
  decode and its cost per second of audio, beside ours, on the same weights and mel; it runs in the
  reference venv (``--reference-python``, default /work/ref-venv/bin/python) through
  ``scripts/stream_reference.py``.

    python scripts/stream_load.py --streams 32 --seconds 10 --find-max --reference /tmp/streaming-vocos

Not a test: figures depend on the machine and what else runs on it (the client shares it with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_load_stats import (  # noqa: E402
    RealTimeSummary,
    StreamResult,
    percentiles,
    summarise,
)

from service.testing import ServerProcess, sigterm_exits  # noqa: E402
from vocos_client import AsyncClient, RetryPolicy  # noqa: E402

FIND_MAX_STREAMS = "8,16,24,32,48,64"
# The run measures the server: a refusal must show, not be waited out.
NO_RETRY = RetryPolicy(retries=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="mel checkpoint directory (default: write a random one, see --random-*)")
    p.add_argument("--random-dim", type=int, default=512, help="backbone dim of the random model (official: 512)")
    p.add_argument("--random-layers", type=int, default=8, help="backbone layers of the random model (official: 8)")
    p.add_argument("--streams", type=int, default=32, help="concurrent streams")
    p.add_argument("--seconds", type=float, default=10.0, help="audio seconds per stream")
    p.add_argument("--rate", type=float, default=1.0, help="TTS speed, in multiples of real time")
    p.add_argument("--min-chunk", type=int, default=5, help="fewest frames in one TTS chunk")
    p.add_argument("--max-chunk", type=int, default=20, help="most frames in one TTS chunk")
    p.add_argument("--buffer-ms", type=float,
                   help="player's jitter buffer after the first audio (default: the longest TTS chunk + 100 ms, "
                        "313 ms for 20 frames at hop 256, 24 kHz)")
    p.add_argument("--stagger", type=float, default=0.5, help="streams start at random times in [0, this] s")
    p.add_argument("--lookahead-frames", type=int,
                   help="a low-latency stream's lookahead in frames (default: the model's exact one)")
    p.add_argument("--format", default="f32", choices=["f32", "pcm16"], help="audio on the wire")
    p.add_argument("--find-max", action="store_true", help="also search the largest N with no underrun")
    p.add_argument("--find-max-streams", default=FIND_MAX_STREAMS, help="the Ns --find-max tries, ascending")
    p.add_argument("--offline-concurrency", type=int, default=8, help="concurrent POSTs of the offline run")
    p.add_argument("--offline-requests", type=int, default=32, help="POSTs in the offline run")
    p.add_argument("--skip-throughput", action="store_true", help="no offline / fed-as-fast-as-possible runs")
    p.add_argument("--reference", help="checkout of pengzhendong/streaming-vocos: compare with its method")
    p.add_argument("--reference-python", default="/work/ref-venv/bin/python", help="python of the reference venv")
    p.add_argument("--torch-threads", type=int,
                   help="torch threads of the server and of the in-process runs (OMP_NUM_THREADS; default: torch's)")
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for the server (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def mel_input(seconds: float, sample_rate: int, hop: int, n_mels: int, seed: int) -> np.ndarray:
    """A log-mel-like spectrogram ``(n_mels, T)`` lasting ``seconds`` (``T = seconds * rate / hop + 1``)."""
    frames = round(seconds * sample_rate / hop) + 1
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_mels, frames)) * 1.5 - 5.0).astype(np.float32)


def chunk_sizes(frames: int, low: int, high: int, rng: np.random.Generator) -> list[int]:
    """``frames`` cut into chunks of ``low..high`` frames (the last one may be shorter)."""
    sizes: list[int] = []
    while sum(sizes) < frames:
        sizes.append(min(int(rng.integers(low, high + 1)), frames - sum(sizes)))
    return sizes


async def run_stream(client: AsyncClient, mel: np.ndarray, sizes: list[int], fps: float | None, fmt: str,
                     delay: float, lookahead_frames: int | None = None) -> StreamResult:
    """One stream: chunks of ``mel`` sent at ``fps`` frames per second (None: at once), audio received.
    Times are ``time.perf_counter()`` seconds."""
    await asyncio.sleep(delay)
    async with client.stream_mel(format=fmt, lookahead_frames=lookahead_frames) as stream:
        result = StreamResult(stream.info.sample_rate, round(stream.info.lookahead_ms * stream.info.sample_rate
                                                               / 1000), stream.info.hop_length)
        receiver = asyncio.create_task(_receive(stream, result))
        try:
            await _send_all(stream, mel, sizes, fps, result)
            await receiver
        finally:
            _drop(receiver)
    result.done = time.perf_counter()
    return result


async def _send_all(stream: object, mel: np.ndarray, sizes: list[int], fps: float | None,
                    result: StreamResult) -> None:
    result.start = time.perf_counter()
    sent = 0
    for size in sizes:
        if fps is not None:  # the TTS has this chunk once its last frame is due
            await asyncio.sleep(max(0.0, result.start + (sent + size) / fps - time.perf_counter()))
        await stream.send(mel[:, sent:sent + size])  # type: ignore[attr-defined]
        sent += size
        result.sends.append((time.perf_counter(), sent))
    await stream.end()  # type: ignore[attr-defined]


def _drop(task: asyncio.Task[None]) -> None:
    """A stream's receiver once the stream stops early (an error, Ctrl-C): cancelled, or its error retrieved
    (the error that stopped the stream says it already), not left to print "exception never retrieved"."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


async def _receive(stream: object, result: StreamResult) -> None:
    async for chunk in stream:  # type: ignore[attr-defined]
        result.receive(time.perf_counter(), chunk)


async def run_streams(url: str, mel: np.ndarray, n: int, args: argparse.Namespace, fps: float | None,
                      seed: int) -> list[StreamResult]:
    """``n`` concurrent streams of ``mel``, each in its own random chunks, starting within ``--stagger`` s."""
    rng = np.random.default_rng(seed)
    async with AsyncClient(url, timeout=120, retry=NO_RETRY) as client:
        jobs = [run_stream(client, mel, chunk_sizes(mel.shape[1], args.min_chunk, args.max_chunk, rng), fps,
                           args.format, float(rng.uniform(0, args.stagger)) if fps else 0.0, args.lookahead_frames)
                for _ in range(n)]
        return list(await asyncio.gather(*jobs))


async def offline_throughput(url: str, mel: np.ndarray, requests: int, concurrency: int) -> tuple[float, float]:
    """POST /decode/mel of ``mel``, ``requests`` in all, ``concurrency`` at once -> (audio-s/s, wall s)."""
    async with AsyncClient(url, timeout=600, retry=NO_RETRY) as client:
        await client.decode_mel(mel)  # warm-up, untimed
        left, audio = requests, 0.0

        async def worker() -> None:
            nonlocal left, audio
            while left > 0:
                left -= 1
                answer = await client.decode_mel(mel)
                audio += answer.seconds  # added after the await, so workers' sums cannot race

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return audio / wall, wall


def streaming_throughput(results: list[StreamResult]) -> float:
    """Audio seconds of all streams per wall second, first start to last done."""
    audio = sum(r.samples for r in results) / results[0].sample_rate
    return audio / (max(r.done for r in results) - min(r.start for r in results))


async def offline_audio(url: str, mel: np.ndarray) -> np.ndarray:
    async with AsyncClient(url, timeout=600) as client:
        return (await client.decode_mel(mel)).samples


def print_realtime(n: int, s: RealTimeSummary, args: argparse.Namespace) -> None:
    ttfa, latency, needed = percentiles(s.first_audio), percentiles(s.chunk_latency), percentiles(s.needed_buffer)
    print(f"real time x{args.rate:g}, {n} streams of {args.seconds:g} s (chunks {args.min_chunk}-{args.max_chunk} "
          f"frames, lookahead {s.lookahead_ms:.1f} ms): underruns {s.underruns}/{n} (buffer {args.buffer_ms:g} ms)")
    print(f"  time to first audio p50 {ttfa[0]:.0f} ms, p99 {ttfa[1]:.0f} ms | chunk latency beyond the lookahead "
          f"p50 {latency[0]:.1f} ms, p99 {latency[1]:.1f} ms, max {latency[2]:.1f} ms")
    print(f"  jitter buffer needed p50 {needed[0]:.0f} ms, p99 {needed[1]:.0f} ms, max {needed[2]:.0f} ms "
          f"(zero-latency server: max {s.ideal_buffer_ms:.0f} ms) | TTS send lag max {s.send_lag_ms:.1f} ms")


async def realtime(url: str, mel: np.ndarray, n: int, args: argparse.Namespace, fps: float,
                   offline: np.ndarray) -> RealTimeSummary:
    results = await run_streams(url, mel, n, args, fps * args.rate, args.seed + n)
    summary = summarise(results, fps * args.rate, args.buffer_ms, offline)
    print_realtime(n, summary, args)
    return summary


async def find_max(url: str, mel: np.ndarray, args: argparse.Namespace, fps: float, offline: np.ndarray) -> None:
    best = 0
    for n in (int(x) for x in args.find_max_streams.split(",")):
        summary = await realtime(url, mel, n, args, fps, offline)
        if summary.underruns:
            break
        best = n
    print(f"find-max: largest N with no underrun: {best} (tried {args.find_max_streams}, stopping at the first "
          "N with an underrun)")


def our_batch1_cost(model_dir: Path, mel: np.ndarray, sizes: list[int]) -> float:
    """vocos_core's streaming decode in this process, one stream: wall seconds per audio second."""
    import torch

    from vocos_core import Vocos

    model = Vocos.from_pretrained(str(model_dir)).eval()
    frames = torch.from_numpy(mel)
    stream = model.stream()
    stream.push(frames[:, :sizes[0]])  # warm-up
    stream = model.stream()
    start, at, samples = time.perf_counter(), 0, 0
    for size in sizes:
        samples += stream.push(frames[:, at:at + size]).numel()
        at += size
    samples += stream.flush().numel()
    return (time.perf_counter() - start) / (samples / model.sample_rate)


def reference(args: argparse.Namespace, model_dir: Path, mel: np.ndarray, sizes: list[int], work: Path,
              ours: np.ndarray, our_offline: np.ndarray, our_cost: float) -> None:
    """Run scripts/stream_reference.py in the reference venv; print its error and cost beside ours."""
    np.save(work / "mel.npy", mel)
    command = [args.reference_python, str(Path(__file__).with_name("stream_reference.py")), "--repo",
               args.reference, "--model", str(model_dir), "--mel", str(work / "mel.npy"), "--sizes",
               ",".join(map(str, sizes)), "--out", str(work / "reference.npz"), "--threads", str(_threads())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        print(f"reference: failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    data = np.load(work / "reference.npz")
    theirs, their_offline = data["streamed"], data["offline"]
    n = min(theirs.size, their_offline.size)
    print(f"reference (streaming-vocos: {stats['chunk_frames']} frames + 2x{stats['padding_frames']} frames of "
          f"context, batch 1, {stats['threads']} threads): max |streamed - offline| "
          f"{np.abs(theirs[:n] - their_offline[:n]).max():.3g}, rms {_rms(theirs[:n] - their_offline[:n]):.3g} "
          f"(length {theirs.size} vs {their_offline.size}); cost {stats['cost']:.3f} s per audio s "
          f"(offline decode {stats['offline_cost']:.3f})")
    print(f"ours (exact streaming, batch 1 in process): max |streamed - offline| "
          f"{np.abs(ours - our_offline).max():.3g}, rms {_rms(ours - our_offline):.3g} (length {ours.size} vs "
          f"{our_offline.size}); cost {our_cost:.3f} s per audio s | our offline vs the reference package's "
          f"offline: max {np.abs(our_offline[:n] - their_offline[:n]).max():.3g}")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def make_model(args: argparse.Namespace, work: Path) -> Path:
    if args.model:
        return Path(args.model)
    from vocos_core.testing import write_random_checkpoint

    return write_random_checkpoint(work / "model", "mel", dim=args.random_dim, num_layers=args.random_layers)


def start_server(model_dir: Path, args: argparse.Namespace, work: Path) -> ServerProcess:
    most = max([args.streams, *(int(x) for x in args.find_max_streams.split(","))] if args.find_max
               else [args.streams])
    server = ServerProcess(["--mel-model", str(model_dir), "--encodec-model", "none", "--device", "cpu",
                            "--max-streams", str(most), *args.server_arg],
                           work / "server.log",
                           env={"OMP_NUM_THREADS": str(args.torch_threads)} if args.torch_threads else None,
                           own_session=True)  # Ctrl-C: see main
    try:
        server.wait_ready(600)
    except BaseException:
        server.stop()
        raise
    return server


async def measure(url: str, args: argparse.Namespace, model: dict[str, int], model_dir: Path, work: Path) -> None:
    rate, hop = model["sample_rate"], model["hop_length"]
    mel = mel_input(args.seconds, rate, hop, model["n_features"], args.seed)
    fps = rate / hop
    if args.buffer_ms is None:
        args.buffer_ms = 1000 * args.max_chunk / fps + 100.0
    offline = await offline_audio(url, mel)
    summary = await realtime(url, mel, args.streams, args, fps, offline)
    print(f"  streamed vs offline decode (POST /decode/mel, wav32f): max |difference| {summary.max_error:.3g}")
    if args.find_max:
        await find_max(url, mel, args, fps, offline)
    if not args.skip_throughput:
        offline_rate, wall = await offline_throughput(url, mel, args.offline_requests, args.offline_concurrency)
        fast = await run_streams(url, mel, args.streams, args, None, args.seed + 1000)
        streaming_rate = streaming_throughput(fast)
        print(f"throughput: offline {offline_rate:.2f} audio-s/s ({args.offline_requests} POSTs of {args.seconds:g} s, "
              f"{args.offline_concurrency} at once, {wall:.1f} s) | streaming {streaming_rate:.2f} audio-s/s "
              f"({args.streams} streams fed as fast as possible, {1 / streaming_rate:.3f} s per audio s) | ratio "
              f"{streaming_rate / offline_rate:.2f}")
    if args.reference:
        sizes = chunk_sizes(mel.shape[1], args.min_chunk, args.max_chunk, np.random.default_rng(args.seed))
        ours = await run_streams(url, mel, 1, args, None, args.seed)
        reference(args, model_dir, mel, sizes, work, ours[0].audio(), offline, our_batch1_cost(model_dir, mel, sizes))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)  # the in-process runs (ours and, through --threads, theirs)
    try:
        with sigterm_exits(), tempfile.TemporaryDirectory(prefix="vocos-stream-load-") as tmp:
            run(args, Path(tmp))
    except KeyboardInterrupt:
        # The server is in its own session (start_server), so it was up while the streams closed: no error.
        print("stream_load: stopped by Ctrl-C", file=sys.stderr)
        return 130
    return 0


def run(args: argparse.Namespace, work: Path) -> None:
    import httpx

    model_dir = make_model(args, work)
    server = start_server(model_dir, args, work)
    try:
        model = next(m for m in httpx.get(f"{server.url}/models", timeout=30).json()["models"] if m["kind"] == "mel")
        print(f"model {model_dir} ({model['parameters']} parameters) | server {server.url} | "
              f"{os.cpu_count()} CPUs, torch threads {args.torch_threads or 'default'} | load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        try:
            asyncio.run(measure(server.url, args, model, model_dir, work))
        except Exception:  # a failure, not Ctrl-C or SIGTERM: the server's side of it
            print("the server's log ends:\n" + "\n".join(server.output().splitlines()[-40:]), file=sys.stderr)
            raise
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        server.stop()

if __name__ == "__main__":
    sys.exit(main())
