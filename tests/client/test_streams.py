"""WebSocket streams of Client and AsyncClient against a real server: the audio of frames pushed in chunks of
any size equals the offline decode, frames can be pushed while audio is consumed, and errors are typed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from service.testing import ServerProcess
from vocos_client import AsyncClient, Client, VocosClientError

RNG = np.random.default_rng(2)
MEL = RNG.standard_normal((100, 90)).astype(np.float32) - 4.0
CODES = RNG.integers(0, 1024, (4, 60))
F32_TOLERANCE = 1e-4


def _pieces(frames: np.ndarray, seed: int) -> list[np.ndarray]:
    """``frames`` ``(C, T)`` cut into chunks of 1..20 frames."""
    rng, at, pieces = np.random.default_rng(seed), 0, []
    while at < frames.shape[1]:
        step = int(rng.integers(1, 21))
        pieces.append(frames[:, at:at + step])
        at += step
    return pieces


@pytest.fixture(scope="module")
def offline(server: ServerProcess) -> dict[str, np.ndarray]:
    with Client(server.url) as client:
        return {"mel": client.decode_mel(MEL).samples, "codes": client.decode_encodec(CODES).samples}


def test_session_audio_equals_the_offline_decode(server: ServerProcess, offline: dict[str, np.ndarray]) -> None:
    with Client(server.url) as client, client.stream_mel(format="f32") as stream:
        assert stream.info.model == "mel" and stream.info.sample_rate == 24000 and stream.info.hop_length == 256
        assert stream.info.format == "f32" and stream.info.lookahead_frames >= 1
        assert stream.info.lookahead_ms == pytest.approx(
            1000 * (stream.info.lookahead_frames * 256 + 512) / 24000, abs=1e-3)  # + half the 1024 window
        for piece in _pieces(MEL, 0):
            stream.send(piece)
        stream.end()
        audio = np.concatenate(list(stream))
    assert stream.samples == audio.size == offline["mel"].size
    assert np.abs(audio - offline["mel"]).max() <= F32_TOLERANCE


def test_frames_are_pushed_while_audio_is_consumed(server: ServerProcess, offline: dict[str, np.ndarray]) -> None:
    """The producer waits for audio of its earlier frames before it sends more, which only works if the
    audio arrives while the stream is open (not all at the end)."""
    got_audio = threading.Event()
    pieces = _pieces(MEL, 1)

    def tts() -> Iterator[np.ndarray]:
        for i, piece in enumerate(pieces):
            if i == len(pieces) // 2:
                assert got_audio.wait(30), "no audio came back before the end of the frames"
            yield piece

    chunks = []
    with Client(server.url) as client:
        for chunk in client.stream_mel_frames(tts(), format="f32"):
            chunks.append(chunk)
            got_audio.set()
    assert len(chunks) > 1
    assert np.abs(np.concatenate(chunks) - offline["mel"]).max() <= F32_TOLERANCE


def test_pcm16_encodec_and_resampled_streams(server: ServerProcess, offline: dict[str, np.ndarray]) -> None:
    with Client(server.url) as client:
        pcm = np.concatenate(list(client.stream_mel_frames(_pieces(MEL, 2))))
        codes = np.concatenate(list(client.stream_encodec_frames(_pieces(CODES, 3), bandwidth_id=1, format="f32")))
        slow = np.concatenate(list(client.stream_mel_frames(_pieces(MEL, 4), sample_rate=16000, format="f32")))
        resampled = client.decode_mel(MEL, sample_rate=16000).samples
    # 16 bits on the wire, as in a 16-bit WAV: within one step of the float samples.
    assert np.abs(pcm - np.clip(offline["mel"], -1, 1)).max() <= 1.5 / 32768
    assert np.abs(codes - offline["codes"]).max() <= F32_TOLERANCE
    assert slow.size == resampled.size


def test_a_producer_pausing_longer_than_the_timeout_is_not_a_timeout(server: ServerProcess,
                                                                     offline: dict[str, np.ndarray]) -> None:
    """A TTS waiting for its next sentence owes the server frames; the server owes nothing meanwhile, so the
    client's timeout (0.5 s here) does not run out in the pause (1.2 s) of the frames loop, sync or async."""
    pieces = _pieces(MEL, 8)

    def tts() -> Iterator[np.ndarray]:
        for i, piece in enumerate(pieces):
            if i == len(pieces) // 2:
                time.sleep(1.2)
            yield piece

    async def atts() -> AsyncIterator[np.ndarray]:
        for i, piece in enumerate(pieces):
            if i == len(pieces) // 2:
                await asyncio.sleep(1.2)
            yield piece

    async def run() -> np.ndarray:
        async with AsyncClient(server.url, timeout=0.5) as client:
            return np.concatenate([c async for c in client.stream_mel_frames(atts(), format="f32")])

    with Client(server.url, timeout=0.5) as client:
        sync = np.concatenate(list(client.stream_mel_frames(tts(), format="f32")))
    for audio in (sync, asyncio.run(run())):
        assert audio.size == offline["mel"].size and np.abs(audio - offline["mel"]).max() <= F32_TOLERANCE


def test_pauses_where_the_server_owes_no_audio_yet_are_not_timeouts(server: ServerProcess) -> None:
    """Right after the lookahead's frames (the inverse STFT's half window is still to come) and between one-frame
    pushes of a resampled stream (soxr holds a few back), a healthy server sends nothing: a pause there is no
    timeout. Frames sent one at a time, with 1.2 s pauses against a 0.5 s timeout."""
    with Client(server.url) as client, client.stream_mel() as probe:
        lookahead = probe.info.lookahead_frames
        offline = client.decode_mel(MEL, sample_rate=11025).samples
    pause_after = {lookahead + 1, lookahead + 2, lookahead + 12}

    def tts() -> Iterator[np.ndarray]:
        for t in range(MEL.shape[1]):
            yield MEL[:, t:t + 1]
            if t + 1 in pause_after:
                time.sleep(1.2)

    with Client(server.url, timeout=0.5) as client:
        audio = np.concatenate(list(client.stream_mel_frames(tts(), sample_rate=11025, format="f32")))
    assert audio.size == offline.size


def test_async_session_and_frames(server: ServerProcess, offline: dict[str, np.ndarray]) -> None:
    async def tts() -> AsyncIterator[np.ndarray]:
        for piece in _pieces(MEL, 5):
            await asyncio.sleep(0)
            yield piece

    async def consume(stream: object) -> list[np.ndarray]:
        return [chunk async for chunk in stream]  # type: ignore[attr-defined]

    async def run() -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
        async with AsyncClient(server.url) as client:
            async with client.stream_mel(format="f32") as stream:
                receiver = asyncio.create_task(consume(stream))
                for piece in _pieces(MEL, 6):
                    await stream.send(piece)
                await stream.end()
                session = np.concatenate(await receiver)
            frames = np.concatenate([c async for c in client.stream_mel_frames(tts(), format="f32")])
            codes = np.concatenate([c async for c in client.stream_encodec_frames(_pieces(CODES, 7), format="f32")])
            return session, frames, codes, stream.samples

    session, frames, codes, samples = asyncio.run(run())
    assert samples == offline["mel"].size
    for audio, want in ((session, "mel"), (frames, "mel"), (codes, "codes")):
        assert audio.size == offline[want].size and np.abs(audio - offline[want]).max() <= F32_TOLERANCE


def test_low_latency_streams_sync_and_async(server: ServerProcess, offline: dict[str, np.ndarray]) -> None:
    async def run() -> tuple[np.ndarray, bool]:
        async with AsyncClient(server.url) as client, client.stream_encodec(lookahead_frames=0) as stream:
            for piece in _pieces(CODES, 9):
                await stream.send(piece)
            await stream.end()
            return np.concatenate([chunk async for chunk in stream]), stream.info.exact

    with Client(server.url) as client, client.stream_mel(format="f32", lookahead_frames=2) as stream:
        assert stream.info.lookahead_frames == 2 and not stream.info.exact
        for piece in _pieces(MEL, 8):
            stream.send(piece)
        stream.end()
        mel = np.concatenate(list(stream))
    codes, exact = asyncio.run(run())
    assert mel.size == offline["mel"].size and codes.size == offline["codes"].size and not exact
    # Not the offline decode, but close to it: the error is measured in docs/streaming.md.
    error = mel - offline["mel"]
    assert np.abs(error).max() > 0 and np.linalg.norm(error) < np.linalg.norm(offline["mel"])


def test_stream_errors_are_typed(server: ServerProcess) -> None:
    with Client(server.url) as client:
        with pytest.raises(VocosClientError) as unknown:
            client.stream_mel(model="no-such-model")
        with client.stream_mel() as stream, pytest.raises(VocosClientError) as channels:
            stream.send(MEL[:50])
            list(stream)
        with pytest.raises(VocosClientError) as codes:
            list(client.stream_encodec_frames([np.full((4, 5), 5000)]))
    assert unknown.value.status == 404 and unknown.value.error == "model_not_loaded"
    assert "no-such-model" in unknown.value.message and unknown.value.request_id
    assert channels.value.status == 422 and "100 mel bands" in channels.value.message
    assert codes.value.status == 422


def test_a_failing_producer_is_raised_to_the_consumer(server: ServerProcess) -> None:
    def tts() -> Iterator[np.ndarray]:
        yield MEL[:, :10]
        raise RuntimeError("the TTS model failed")

    async def atts() -> AsyncIterator[np.ndarray]:
        yield MEL[:, :10]
        raise RuntimeError("the async TTS model failed")

    async def run() -> None:
        async with AsyncClient(server.url) as client:
            async for _ in client.stream_mel_frames(atts()):
                pass

    with Client(server.url) as client, pytest.raises(RuntimeError, match="the TTS model failed"):
        list(client.stream_mel_frames(tts()))
    with pytest.raises(RuntimeError, match="the async TTS model failed"):
        asyncio.run(run())
    with pytest.raises(ValueError, match="pcm16, f32"):
        Client(server.url).stream_mel(format="wav16")
