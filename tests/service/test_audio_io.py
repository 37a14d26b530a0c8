"""Decoding uploads (formats, rates, channels, limits) and encoding responses (WAV16, WAV32F, FLAC)."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from service_helpers import tone

from service.errors import (
    InvalidInputError,
    InvalidParameterError,
    MalformedPayloadError,
    NotAcceptableError,
    PayloadTooLargeError,
)
from service.runtime.audio_io import (
    OutputFormat,
    check_encodable,
    choose_format,
    decode_audio,
    encode_audio,
    resampled_length,
)
from service.testing import audio_file


@pytest.mark.parametrize(
    ("container", "subtype", "rate", "channels"),
    [
        ("WAV", "PCM_16", 24000, 1),
        ("WAV", "FLOAT", 16000, 2),
        ("FLAC", "PCM_24", 44100, 2),
        ("OGG", "VORBIS", 48000, 1),
        ("OGG", "OPUS", 48000, 2),
        ("MP3", "MPEG_LAYER_III", 22050, 1),
    ],
)
def test_decodes_every_supported_format_to_24k_mono(container: str, subtype: str, rate: int, channels: int) -> None:
    body = audio_file(tone(1.0, rate, channels), rate, container, subtype)
    audio = decode_audio(body, 24000, 600).samples
    assert audio.dtype == np.float32 and audio.ndim == 1
    # Lossy codecs add priming/padding samples; lengths stay within 60 ms of one second.
    assert abs(audio.size - 24000) < 0.06 * 24000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 24000 / audio.size - 220) < 5  # the 220 Hz tone survived


def test_channels_are_mixed_by_mean() -> None:
    left = np.full(2400, 0.5, np.float32)
    right = np.full(2400, -0.1, np.float32)
    audio = decode_audio(audio_file(np.stack([left, right], 1), 24000, "WAV", "FLOAT"), 24000, 10).samples
    np.testing.assert_allclose(audio, 0.2, atol=1e-6)


def test_resampling_preserves_duration() -> None:
    audio = decode_audio(audio_file(tone(2.0, 8000), 8000), 24000, 10).samples
    assert audio.size == 48000


@pytest.mark.parametrize(("rate", "frames", "samples"), [(44100, 1, 1), (44100, 3, 2), (22050, 11025, 12000),
                                                         (16000, 7777, 11666), (48000, 31873, 15937)])
def test_resampled_length_is_the_duration_rounded_halves_up(rate: int, frames: int, samples: int) -> None:
    # 3 frames at 44.1 kHz are 1.63 samples at 24 kHz; 7777 at 16 kHz are 11665.5; 31873 at 48 kHz 15936.5.
    assert resampled_length(frames, rate, 24000) == samples
    assert decode_audio(audio_file(tone(1.0, rate)[:frames], rate), 24000, 10).samples.size == samples


def test_a_rate_below_the_floor_is_refused_from_the_header() -> None:
    one_hertz = audio_file(tone(599.0, 1), 1)  # 1.2 KB that would resample into 599 s at 24 kHz
    assert len(one_hertz) < 1300
    started = time.perf_counter()
    with pytest.raises(InvalidInputError, match=r"sample rate is 1 Hz; this server accepts 8000 Hz or more "
                                                r"\(VOCOS_MIN_SAMPLE_RATE\)"):
        decode_audio(one_hertz, 24000, 600, min_rate=8000)
    assert time.perf_counter() - started < 0.05
    with pytest.raises(InvalidInputError, match="7999 Hz"):
        decode_audio(audio_file(tone(0.1, 7999), 7999), 24000, 600, min_rate=8000)
    assert decode_audio(audio_file(tone(0.1, 8000), 8000), 24000, 600, min_rate=8000).samples.size == 2400


def test_too_long_by_header_is_refused_before_decoding() -> None:
    body = audio_file(tone(3.0, 8000), 8000)
    with pytest.raises(PayloadTooLargeError, match=r"lasts 3.0 s; this server accepts at most 2 s"):
        decode_audio(body, 24000, 2)


def test_too_long_without_a_reliable_header_stops_decoding_at_the_limit() -> None:
    # A WAV whose header declares 0 data frames but carries 3 s of samples.
    body = bytearray(audio_file(tone(3.0, 8000), 8000))
    data_at = body.index(b"data")
    body[data_at + 4 : data_at + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    with pytest.raises(PayloadTooLargeError, match="at most 1 s"):
        decode_audio(bytes(body), 24000, 1)


def test_empty_and_undecodable_files() -> None:
    with pytest.raises(InvalidInputError, match="body is empty"):
        decode_audio(b"", 24000, 10)
    with pytest.raises(InvalidInputError, match="no samples"):
        decode_audio(audio_file(np.zeros(0, np.float32), 24000), 24000, 10)
    with pytest.raises(MalformedPayloadError, match="could not decode the audio file; expected WAV, FLAC"):
        decode_audio(b"this is not audio at all" * 10, 24000, 10)
    wav = audio_file(tone(0.5, 24000), 24000)
    with pytest.raises(MalformedPayloadError):
        decode_audio(wav[:30], 24000, 10)


def test_a_file_cut_short_says_how_far_it_decoded_of_what_its_header_declares() -> None:
    """A FLAC cut short (an interrupted copy) was refused as "could not decode the audio file; expected WAV,
    FLAC, ..." (the decoder's "lost sync" in brackets): the sender of a FLAC was told to send one."""
    body = audio_file(tone(1.0, 16000, 2), 16000, "FLAC", "PCM_16")
    cut_short = r"cut short, decoding failed after 0\.[0-9]{3} s of the 1\.000 s its header declares \(.*lost sync"
    with pytest.raises(MalformedPayloadError, match=cut_short + r".*\); expected a complete WAV, FLAC"):
        decode_audio(body[: len(body) * 3 // 4], 24000, 10)
    # An OGG cut short before its first whole page of audio was "contains no samples", with no hint why.
    ogg = audio_file(tone(1.0, 16000), 16000, "OGG", "VORBIS")
    with pytest.raises(InvalidInputError, match=r"no samples; expected at least one \(a file cut short may hold no"):
        decode_audio(ogg[: len(ogg) * 9 // 10], 24000, 10)
    # A WAV cut short decodes what it holds (libsndfile reads to the end of the body), to the sample.
    wav = audio_file(tone(1.0, 16000), 16000)
    assert decode_audio(wav[: 44 + 2 * 1001], 24000, 10).frames == 1001


def test_a_whole_flac_with_bytes_after_its_frames_decodes() -> None:
    """libFLAC loses sync on bytes after the last frame: an ID3v1 tag (which taggers append to FLACs too), or
    padding. All the frames STREAMINFO declares had come, yet the file was refused 400."""
    samples = tone(1.0, 16000)
    body = audio_file(samples, 16000, "FLAC", "PCM_16")
    id3v1 = b"TAG" + b"Title".ljust(30, b"\0") + bytes(95)
    for tail in (id3v1, bytes(4096)):
        decoded = decode_audio(body + tail, 16000, 10)
        assert decoded.frames == samples.size
        np.testing.assert_allclose(decoded.samples, samples, atol=2 / 32768)


def test_float_wav_with_nan_is_refused() -> None:
    samples = tone(0.1, 24000)
    samples[10] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or Inf samples; expected finite samples within ±1"):
        decode_audio(audio_file(samples, 24000, "WAV", "FLOAT"), 24000, 10)


def test_huge_finite_samples_are_refused_by_their_magnitude_not_as_nan() -> None:
    # 3e38 is finite in float32; two channels of it overflowed the mix into Inf, and alone its power
    # overflowed the features, which a streamed answer meets after its 200.
    for channels in (1, 2):
        samples = np.full((2400, channels), 3e38, np.float32)
        with pytest.raises(InvalidInputError, match=r"magnitude 3e\+38; audio is expected within ±1"):
            decode_audio(audio_file(samples, 24000, "WAV", "FLOAT"), 24000, 10)
    loud = np.full(2400, 1e6, np.float32)  # the most taken
    assert decode_audio(audio_file(loud, 24000, "WAV", "FLOAT"), 24000, 10).samples.max() == 1e6


def test_a_flac_of_unknown_length_decodes_whole() -> None:
    """STREAMINFO's total-samples field 0 means "unknown" (what an encoder writing to a pipe leaves); the
    reader used to fail at the end of the data with "psf_fseek() failed"."""
    samples = tone(1.3, 16000)
    body = bytearray(audio_file(samples, 16000, "FLAC", "PCM_16"))
    field = int.from_bytes(body[18:26], "big") & ~((1 << 36) - 1)  # zero the 36-bit total-samples field
    body[18:26] = field.to_bytes(8, "big")
    decoded = decode_audio(bytes(body), 16000, 10)
    assert decoded.frames == samples.size
    np.testing.assert_allclose(decoded.samples, samples, atol=2 / 32768)
    # Beyond the limit, refused from what was decoded: at least that long (it said "more than" its length).
    with pytest.raises(PayloadTooLargeError, match=r"the audio lasts at least 1\.3 s; this server accepts at most 1 s"):
        decode_audio(bytes(body), 16000, 1)


def test_a_vbr_mp3_is_held_to_its_decoded_length_not_its_estimated_one() -> None:
    """Without a Xing/VBRI frame, an MP3's length is libsndfile's guess from its first frame's bitrate: 2 s of
    silence then 8 s of noise (VBR) guess 20 s. A 172 s file of that kind was refused as lasting 677 s."""
    rng = np.random.default_rng(0)
    samples = np.concatenate([np.zeros(2 * 44100), 0.5 * rng.standard_normal(8 * 44100)]).astype(np.float32)
    mp3 = audio_file(samples, 44100, "MP3", "MPEG_LAYER_III")  # VBR: libsndfile's default
    head = int.from_bytes(mp3[:4], "big")  # the first frame, libsndfile's Xing frame, dropped
    kbps = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320][(head >> 12) & 15]
    body = mp3[144000 * kbps // 44100 + ((head >> 9) & 1):]
    assert b"Xing" in mp3[:200] and b"Xing" not in body and sf.info(io.BytesIO(body)).duration > 15
    decoded = decode_audio(body, 24000, 15)
    assert abs(decoded.frames / 44100 - 10) < 0.1
    assert decoded.samples.size == decoded.length_at(24000)
    with pytest.raises(PayloadTooLargeError, match=r"lasts at least \d+(\.\d)? s; this server accepts at most 5 s"):
        decode_audio(body, 24000, 5)  # still held to the limit, while it decodes


@pytest.mark.parametrize("riff_size", [0, None])
def test_a_wav_whose_data_chunk_declares_0_bytes_decodes_to_its_end(riff_size: int | None) -> None:
    """What a writer that cannot seek back leaves (Python's wave on a stream, streaming TTS servers); it was
    422 "no samples". A LIST chunk before the data (as ffmpeg writes) is stepped over."""
    samples = tone(0.7, 16000)
    wav = audio_file(samples, 16000, "WAV", "PCM_16")
    data_at = wav.index(b"data")
    listed = wav[:data_at] + b"LIST\x05\x00\x00\x00INFOx\x00" + wav[data_at:]  # an odd size, padded
    for body in (bytearray(wav), bytearray(listed)):
        at = body.index(b"data")
        body[at + 4 : at + 8] = bytes(4)
        if riff_size is not None:
            body[4:8] = riff_size.to_bytes(4, "little")
        decoded = decode_audio(bytes(body), 16000, 10)
        assert decoded.frames == samples.size
        np.testing.assert_allclose(decoded.samples, samples, atol=2 / 32768)
    with pytest.raises(InvalidInputError, match="no samples"):  # 0 bytes declared and none there
        decode_audio(wav[: data_at + 4] + bytes(4), 16000, 10)


def test_only_the_chunks_of_a_header_are_walked_for_a_data_chunk_of_0_bytes() -> None:
    """A body of millions of empty chunks took seconds of Python to walk (libsndfile refuses it in
    milliseconds): past the header's first chunks, a data chunk of 0 bytes is left as it is."""
    wav = audio_file(tone(0.1, 16000), 16000, "WAV", "PCM_16")
    data_at = wav.index(b"data")
    junk = b"junk" + bytes(4)  # an empty chunk
    body = bytearray(wav[:data_at] + junk * 20 + wav[data_at:])
    at = body.index(b"data")
    body[at + 4 : at + 8] = bytes(4)
    with pytest.raises(InvalidInputError, match="no samples"):
        decode_audio(bytes(body), 16000, 10)


def test_many_channels_decode_in_blocks_of_bounded_memory() -> None:
    body = audio_file(np.zeros((65536, 256), np.float32), 24000, "WAV", "PCM_16")  # 32 MiB of 16-bit samples
    tracemalloc.start()
    try:
        decoded = decode_audio(body, 24000, 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.samples.size == 65536
    # 65536 frames x 256 channels at once would be 64 MiB of float32 (and as much again for the mix).
    assert peak < 16 * 2**20, peak


@pytest.mark.parametrize(("rate", "frames", "out_rate"), [(48000, 48001, 48000), (44100, 2053, 44100),
                                                          (16000, 16001, 48000), (44100, 44101, 16000)])
def test_the_length_at_any_rate_is_rounded_once_from_the_files_frames(rate: int, frames: int, out_rate: int) -> None:
    decoded = decode_audio(audio_file(tone(1.1, rate)[:frames], rate), 24000, 10)
    assert decoded.length_at(out_rate) == resampled_length(frames, rate, out_rate)
    # Through the 24 kHz samples, rounded twice, these were a sample off.
    assert resampled_length(decoded.samples.size, 24000, out_rate) != decoded.length_at(out_rate)


@pytest.mark.parametrize(
    ("fmt", "subtype", "container", "tolerance"),
    [
        (OutputFormat.WAV16, "PCM_16", "WAV", 1 / 32767),
        (OutputFormat.WAV32F, "FLOAT", "WAV", 0.0),
        (OutputFormat.FLAC, "PCM_16", "FLAC", 1 / 32767),
    ],
)
def test_encode_round_trip(fmt: OutputFormat, subtype: str, container: str, tolerance: float) -> None:
    samples = tone(0.25, 24000)
    body = encode_audio(samples, 24000, fmt)
    info = sf.info(io.BytesIO(body))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (container, subtype, 24000, 1)
    decoded, _ = sf.read(io.BytesIO(body), dtype="float32")
    assert np.max(np.abs(decoded - samples)) <= tolerance


@pytest.mark.parametrize("rate", [65536, 96001, 191999])
def test_a_rate_flac_cannot_carry_is_a_422_naming_the_rates_it_can(rate: int) -> None:
    """libFLAC refuses rates above 65535 Hz that are no multiple of 10 Hz: ``?sample_rate=96001&format=flac``
    was a 500 after the compute (LibsndfileError "problem with initialization of the flac decoder")."""
    expected = rf"FLAC cannot carry a sample rate of {rate} Hz: above 65535 Hz it takes only multiples of 10 Hz; "
    with pytest.raises(InvalidParameterError, match=expected + rf"expected a sample_rate such as {rate - rate % 10}"):
        encode_audio(tone(0.1, rate), rate, OutputFormat.FLAC)
    check_encodable(OutputFormat.WAV16, rate)  # WAVs carry any rate
    for near in (rate - rate % 10, 65535):  # FLAC carries these, and reads them back
        body = encode_audio(tone(0.1, near), near, OutputFormat.FLAC)
        assert sf.info(io.BytesIO(body)).samplerate == near


def test_pcm16_clips_instead_of_wrapping() -> None:
    decoded, _ = sf.read(io.BytesIO(encode_audio(np.array([1.5, -2.0, 0.5], np.float32), 24000,
                                                 OutputFormat.WAV16)), dtype="float32")
    assert decoded[0] > 0.99 and decoded[1] == -1.0


def test_choose_format() -> None:
    assert choose_format(None, None) is OutputFormat.WAV16
    assert choose_format(OutputFormat.FLAC, "audio/wav") is OutputFormat.FLAC
    assert choose_format(None, "audio/flac") is OutputFormat.FLAC
    assert choose_format(None, "audio/wav;q=0.5, audio/flac;q=0.9") is OutputFormat.FLAC
    assert choose_format(None, "application/json, */*;q=0.1") is OutputFormat.WAV16
    # A streamed answer is a WAV: the best streamable type of Accept, else FLAC (refused by the route).
    assert choose_format(None, "audio/flac, audio/wav;q=0.5", streamed=True) is OutputFormat.WAV16
    assert choose_format(None, "audio/flac", streamed=True) is OutputFormat.FLAC
    with pytest.raises(NotAcceptableError, match="available: audio/wav, audio/flac"):
        choose_format(None, "application/json")
    with pytest.raises(NotAcceptableError):
        choose_format(None, "audio/flac;q=0")


def test_accept_follows_the_most_specific_range_and_its_q_in_any_case() -> None:
    """RFC 9110: q=0 on a type refuses it even where a wildcard follows; parameter names are case-insensitive."""
    assert choose_format(None, "audio/wav;q=0, */*") is OutputFormat.FLAC
    assert choose_format(None, "audio/flac;Q=0, audio/wav;q=0.1") is OutputFormat.WAV16
    assert choose_format(None, "audio/vnd.wave") is OutputFormat.WAV16  # a WAV type it takes as an upload
    assert choose_format(None, "*/*") is OutputFormat.WAV16 and choose_format(None, "audio/*") is OutputFormat.WAV16
    assert choose_format(None, "audio/flac;q=0.5, audio/wav;q=0.5") is OutputFormat.FLAC  # equals: listed first


def test_a_wav_past_its_32_bit_sizes_is_refused_as_too_large() -> None:
    """Its header's struct.pack failed (a 500, after the compute) for more than 4 GiB of samples, which a
    raised MAX_AUDIO_SECONDS at 192 kHz wav32f reaches."""
    from service.runtime.audio_io import MAX_WAV_DATA_BYTES, wav_header

    assert len(wav_header(MAX_WAV_DATA_BYTES // 4, 192000, OutputFormat.WAV32F)) == 58
    with pytest.raises(PayloadTooLargeError, match="more than a WAV's 32-bit sizes allow"):
        wav_header(MAX_WAV_DATA_BYTES // 4 + 1, 192000, OutputFormat.WAV32F)
