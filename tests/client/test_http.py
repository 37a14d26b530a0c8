"""The HTTP methods of Client and AsyncClient against a real server: the same audio as the API's own WAV,
whole or read as it arrives (``stream=True``), for mel, EnCodec and resynthesis."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from service.testing import ServerProcess, npy_bytes
from vocos_client import AsyncClient, Audio, Client, VocosClientError

RNG = np.random.default_rng(0)
MEL = RNG.standard_normal((100, 70)).astype(np.float32) - 4.0
CODES = RNG.integers(0, 1024, (8, 40))
SPEECH = (0.3 * np.sin(np.arange(12000) * 0.05)).astype(np.float32)


def _api_wav(server: ServerProcess, path: str, body: bytes, content_type: str, **params: Any) -> np.ndarray:
    """What the endpoint itself answers, read with libsndfile (float32, (S,))."""
    response = httpx.post(f"{server.url}{path}", params={"format": "wav32f", **params}, content=body,
                          headers={"content-type": content_type}, timeout=60)
    assert response.status_code == 200, response.text
    samples, _ = sf.read(io.BytesIO(response.content), dtype="float32")
    return samples


def test_models_health_and_ready(server: ServerProcess) -> None:
    with Client(server.url) as client:
        names = {m["name"]: m["kind"] for m in client.models()}
        assert names == {"mel": "mel", "encodec": "encodec"}
        assert client.health()["status"] == "alive"
        assert client.ready()["status"] == "ready"


def test_decode_mel_equals_the_endpoints_wav(server: ServerProcess) -> None:
    expected = _api_wav(server, "/decode/mel", npy_bytes(MEL), "application/x-npy")
    with Client(server.url) as client:
        audio = client.decode_mel(MEL)
        pcm = client.decode_mel(MEL, format="wav16")
    assert isinstance(audio, Audio) and audio.sample_rate == 24000 and audio.model == "mel"
    assert audio.samples.dtype == np.float32 and audio.samples.shape == (69 * 256,)
    np.testing.assert_array_equal(audio.samples, expected)
    assert np.abs(pcm.samples - expected).max() <= 1 / 32768 + 1e-7  # libsndfile floors to 16 bits: one step


def test_decode_mel_resamples_and_warns(server: ServerProcess) -> None:
    normalised = np.random.default_rng(0).standard_normal((100, 80)).astype(np.float32)  # mean 0, std 1
    with Client(server.url) as client:
        audio = client.decode_mel(normalised, sample_rate=16000)
    assert audio.sample_rate == 16000 and audio.samples.size == round(79 * 256 * 16000 / 24000)
    assert audio.warning and "normalised" in audio.warning


def test_decode_encodec_and_resynthesize_equal_the_endpoints(server: ServerProcess) -> None:
    codes_expected = _api_wav(server, "/decode/encodec", npy_bytes(CODES), "application/x-npy", bandwidth_id=2)
    wav = io.BytesIO()
    sf.write(wav, SPEECH, 24000, format="WAV", subtype="FLOAT")
    resynth_expected = _api_wav(server, "/resynthesize", wav.getvalue(), "audio/wav")
    with Client(server.url) as client:
        codes_audio = client.decode_encodec(CODES, bandwidth_id=2)
        from_bytes = client.resynthesize(wav.getvalue())
        from_array = client.resynthesize((SPEECH, 24000))
    assert codes_audio.model == "encodec" and codes_audio.samples.shape == (40 * 320,)
    np.testing.assert_array_equal(codes_audio.samples, codes_expected)
    np.testing.assert_array_equal(from_bytes.samples, resynth_expected)
    np.testing.assert_array_equal(from_array.samples, resynth_expected)


def test_integer_pcm_is_scaled_and_float_codes_are_left_to_the_server(server: ServerProcess) -> None:
    pcm16 = np.round(SPEECH * 32768).astype(np.int16)  # what soundfile reads as int16
    with Client(server.url) as client:
        from_int16 = client.resynthesize((pcm16, 24000))
        from_floats = client.resynthesize((pcm16 / np.float32(32768), 24000))
        with pytest.raises(VocosClientError) as caught:
            client.decode_encodec(np.full((8, 10), 3.7))  # not cast to 3 on the way
    np.testing.assert_array_equal(from_int16.samples, from_floats.samples)
    assert caught.value.status == 422 and "expected integer codes" in caught.value.message


def test_resynthesize_a_file_path_with_another_rate(server: ServerProcess, tmp_path: Any) -> None:
    path = tmp_path / "speech.flac"
    sf.write(path, SPEECH, 16000)
    with Client(server.url) as client:
        audio = client.resynthesize(path, model="encodec", bandwidth=6.0)
    assert audio.model == "encodec" and audio.samples.size == round(12000 * 24000 / 16000)


@pytest.mark.parametrize("fmt", ["wav32f", "wav16"])
def test_streamed_answers_equal_whole_ones(server: ServerProcess, fmt: str) -> None:
    with Client(server.url) as client:
        whole = client.decode_mel(MEL, format=fmt)
        chunks = client.decode_mel(MEL, format=fmt, stream=True)
        assert chunks.sample_rate == 24000 and chunks.total_samples == whole.samples.size and chunks.model == "mel"
        parts = list(chunks)
        codes = client.decode_encodec(CODES, format=fmt, stream=True).read()
        resynth = client.resynthesize((SPEECH, 24000), format=fmt, stream=True).read()
        codes_whole = client.decode_encodec(CODES, format=fmt).samples
        resynth_whole = client.resynthesize((SPEECH, 24000), format=fmt).samples
    # A streamed answer is the streaming decode: equal to the whole one to float32 rounding, which as
    # 16-bit PCM may move a sample by one step.
    step = 1.5 / 32768 if fmt == "wav16" else 0.0
    for streamed, expected in ((np.concatenate(parts), whole.samples), (codes.samples, codes_whole),
                               (resynth.samples, resynth_whole)):
        assert streamed.shape == expected.shape
        assert np.abs(streamed - expected).max() <= step + 1e-5 * np.abs(expected).max()


def test_an_answer_left_early_says_so_when_read_again(server: ServerProcess) -> None:
    """Reading on after a loop over the chunks was left (which closes the answer) failed with "the answer broke
    off ... Bad file descriptor", blaming the server or the network."""
    with Client(server.url) as client:
        chunks = client.decode_mel(MEL, stream=True)
        for _ in chunks:
            break
        with pytest.raises(ValueError, match=r"closed before its end \(a loop over it was left early"):
            chunks.read()
        whole = client.decode_mel(MEL, stream=True)
        assert whole.read().samples.size == 69 * 256 and whole.read().samples.size == 0  # read to its end: no more

    async def run() -> None:
        async with AsyncClient(server.url) as client:
            chunks = await client.decode_mel(MEL, stream=True)
            async for _ in chunks:
                break
            await chunks.aclose()  # what leaving an async for cannot do by itself
            with pytest.raises(ValueError, match="closed before its end"):
                await chunks.read()

    asyncio.run(run())


def test_async_client_has_the_same_answers(server: ServerProcess) -> None:
    with Client(server.url) as client:
        expected = [client.decode_mel(MEL).samples, client.decode_encodec(CODES).samples,
                    client.resynthesize((SPEECH, 24000)).samples]

    async def run() -> list[np.ndarray]:
        async with AsyncClient(server.url) as client:
            assert (await client.health())["status"] == "alive"
            assert (await client.ready())["status"] == "ready"
            assert len(await client.models()) == 2
            mel, codes, resynth = await asyncio.gather(
                client.decode_mel(MEL), client.decode_encodec(CODES), client.resynthesize((SPEECH, 24000)))
            async with await client.decode_mel(MEL, stream=True) as chunks:  # as docs/streaming.md shows it
                assert chunks.total_samples == mel.samples.size
                streamed = np.concatenate([part async for part in chunks])
            streamed_codes = await (await client.decode_encodec(CODES, stream=True)).read()
            streamed_resynth = await (await client.resynthesize((SPEECH, 24000), stream=True)).read()
            return [mel.samples, codes.samples, resynth.samples, streamed, streamed_codes.samples,
                    streamed_resynth.samples]

    got = asyncio.run(run())
    # Concurrent requests share a batch, streamed ones are the streaming decode: equal to float32 rounding.
    for have, want in zip(got, expected + expected, strict=True):
        assert have.shape == want.shape
        assert np.abs(have - want).max() <= 1e-5 * np.abs(want).max()


def test_answers_compare_and_hash_without_numpy_errors() -> None:
    """A frozen dataclass's own __eq__ compares the samples arrays as a tuple: ValueError from numpy."""
    a = Audio(np.zeros(4, np.float32), 24000, "mel")
    b = Audio(np.zeros(4, np.float32), 24000, "mel")
    assert a == a and a != b
    assert len({a, b}) == 2


def test_an_unknown_answer_format_is_refused_before_sending() -> None:
    with Client("http://127.0.0.1:9") as client, pytest.raises(ValueError, match="wav16, wav32f"):
        client.decode_mel(MEL, format="flac")
