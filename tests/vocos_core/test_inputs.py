"""Bad input raises InputError with a message that says what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vocos_core import InputError, Vocos

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


@pytest.fixture(scope="module")
def mel() -> Vocos:
    return Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny")


@pytest.fixture(scope="module")
def enc() -> Vocos:
    return Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny")


@pytest.mark.parametrize(("features", "message"), [
    (torch.randn(100, 10), r"expected shape \(B, 100, T\)"),
    (torch.randn(1, 1, 100, 10), r"expected shape \(B, 100, T\)"),
    (torch.randn(1, 80, 10), "expected 100 channels"),
    (torch.randn(1, 100, 0), "empty input"),
    (torch.randn(0, 100, 5), "empty input"),
    (torch.full((1, 100, 5), float("nan")), "NaN or Inf"),
    (torch.full((1, 100, 5), float("inf")), "NaN or Inf"),
    (torch.ones(1, 100, 5, dtype=torch.long), "floating-point"),
    ([[1.0]], "torch.Tensor"),
])
def test_decode_rejects_bad_features(mel: Vocos, features: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        mel.decode(features)  # type: ignore[arg-type]


def test_an_unbatched_mel_is_told_how_to_add_the_batch_dim(mel: Vocos) -> None:
    """A ``(100, T)`` mel (a TTS model's output) got only "expected shape (B, 100, T)"."""
    with pytest.raises(InputError, match=r"got \(100, 10\); for one item \(100, T\), pass features\[None\]"):
        mel.decode(torch.randn(100, 10))
    with pytest.raises(InputError) as not_a_mel:
        mel.decode(torch.randn(80, 10))
    assert "[None]" not in str(not_a_mel.value)


def test_decode_batch_rejects_bad_items(mel: Vocos) -> None:
    with pytest.raises(InputError, match="at least one item"):
        mel.decode_batch([])
    with pytest.raises(InputError, match=r"features\[1\]: expected shape \(100, T\)"):
        mel.decode_batch([torch.randn(100, 4), torch.randn(1, 100, 4)])
    with pytest.raises(InputError, match=r"features\[0\].*NaN"):
        mel.decode_batch([torch.full((100, 4), float("nan"))])


def test_values_beyond_the_models_dtype_are_refused_not_decoded_to_nan(mel: Vocos) -> None:
    """A finite float64 1e39 was accepted and became Inf in the float32 model: NaN audio, no error."""
    features = torch.randn(1, 100, 12, dtype=torch.float64)
    features[0, 3, 5] = -1e39
    beyond = r"holds 1e\+39, beyond the range of torch.float32"
    with pytest.raises(InputError, match=f"features: {beyond}"):
        mel.decode(features)
    with pytest.raises(InputError, match=rf"features\[0\]: {beyond}"):
        mel.decode_batch([features[0]])
    with pytest.raises(InputError, match=f"frames: {beyond}"):
        mel.stream().push(features[0])
    with pytest.raises(InputError, match=f"audio: {beyond}"):
        mel.audio_to_features(torch.full((1, 2000), 1e39, dtype=torch.float64))
    half = Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny").half()
    with pytest.raises(InputError, match=r"holds 7e\+04, beyond the range of torch.float16"):
        half.decode(torch.full((1, 100, 3), 7e4))
    assert torch.isfinite(mel.decode(features.clamp(-20, 20))).all()  # float64 within range still decodes


@pytest.mark.parametrize(("audio", "message"), [
    (torch.randn(1, 1, 1000), r"shape \(B, samples\)"),
    (torch.randn(1, 10), "at least 513 samples"),
    (torch.zeros(1, 0), "at least"),
    (torch.zeros(0, 1000), r"the batch is empty, shape \(0, 1000\); expected \(B, samples\) with B >= 1"),
    (torch.full((1, 2000), float("nan")), "NaN or Inf"),
    (torch.ones(1, 2000, dtype=torch.int16), "floating-point"),
])
def test_copy_synthesis_rejects_bad_audio(mel: Vocos, audio: torch.Tensor, message: str) -> None:
    with pytest.raises(InputError, match=message):
        mel(audio)


@pytest.mark.parametrize("shape", [(1999,), (1, 1999), (3, 1999)])
def test_audio_to_features_takes_the_shapes_forward_takes(mel: Vocos, shape: tuple[int, ...]) -> None:
    audio = 0.1 * torch.randn(shape)
    features = mel.audio_to_features(audio)
    batch = 1 if len(shape) == 1 else shape[0]
    assert features.shape == (batch, mel.n_features, 1999 // 256 + 1)  # (B, C, T), centred frames
    assert torch.equal(mel.decode(features), mel(audio))


def test_audio_to_features_of_encodec_takes_one_bandwidth_for_the_batch(encodec_weights: Path) -> None:
    model = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny", encodec_weights=encodec_weights)
    audio = 0.1 * torch.randn(2, 960)
    features = model.audio_to_features(audio, bandwidth_id=1)
    assert features.shape == (2, 128, 3)  # (B, 128, ceil(S / 320))
    assert torch.equal(model.audio_to_features(audio[:1], 1), model.audio_to_features(audio[0], 1))
    assert torch.equal(model.decode(features, bandwidth_id=1), model(audio, bandwidth_id=1))
    with pytest.raises(InputError, match="one bandwidth id for the whole batch"):
        model.audio_to_features(audio, bandwidth_id=torch.tensor([0, 1]))
    with pytest.raises(InputError, match="bandwidth_id is required"):
        model.audio_to_features(audio)


@pytest.mark.parametrize(("codes", "message"), [
    (torch.full((2, 10), 1024), r"\[0, 1024\)"),
    (torch.full((2, 10), -1), r"\[0, 1024\)"),
    (torch.zeros(17, 10, dtype=torch.long), "1..16 codebooks"),
    (torch.zeros(2, 10), "integer tensor"),
    (torch.zeros(10, dtype=torch.long), r"\(K, L\)"),
    (torch.zeros(2, 0, dtype=torch.long), "empty"),
])
def test_codes_out_of_range_or_malformed(enc: Vocos, codes: torch.Tensor, message: str) -> None:
    with pytest.raises(InputError, match=message):
        enc.codes_to_features(codes)


def test_bandwidth_id_must_exist(enc: Vocos) -> None:
    features = torch.randn(1, 128, 5)
    with pytest.raises(InputError, match=r"out of range; valid: 0 \(1.5 kbps\), 1 \(3 kbps\)"):
        enc.decode(features, bandwidth_id=torch.tensor([4]))
    with pytest.raises(InputError, match="bandwidth_id is required"):
        enc.decode(features)
    with pytest.raises(InputError, match="expected integers"):
        enc.decode(features, bandwidth_id=torch.tensor([1.0]))
    with pytest.raises(InputError, match="out of range"):
        enc.decode_batch([features[0]], [-1])
    with pytest.raises(InputError, match="expected an int or integer ids, got '1'"):
        enc.decode(features, bandwidth_id="1")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expected an int or integer ids"):
        enc.stream(bandwidth_id="1")  # type: ignore[arg-type]


def test_decode_batch_takes_any_iterable_and_stream_push_says_its_shape(mel: Vocos) -> None:
    items = [torch.randn(100, t) for t in (5, 9)]
    from_generator = mel.decode_batch(x for x in items)
    for got, want in zip(from_generator, mel.decode_batch(items), strict=True):
        assert torch.equal(got, want)
    with pytest.raises(InputError, match=r"frames: expected shape \(100, t\) with t >= 1, got \(100,\)"):
        mel.stream().push(torch.randn(100))


@pytest.mark.parametrize("codes", [torch.zeros(4, dtype=torch.long), torch.zeros(4, 1, 6, dtype=torch.long), [[0]]])
def test_stream_push_codes_says_its_own_shape(enc: Vocos, codes: object) -> None:
    """push_codes takes (K, t) only; 1-D codes and lists were answered with decode_codes' (K, L) or (K, B, L)."""
    with pytest.raises(InputError, match=r"codes: expected shape \(K, t\), got"):
        enc.stream(bandwidth_id=1).push_codes(codes)  # type: ignore[arg-type]


def test_codebook_count_must_match_bandwidth(enc: Vocos) -> None:
    codes = torch.zeros(4, 10, dtype=torch.long)
    with pytest.raises(InputError, match=r"uses 8 codebooks, got 4"):
        enc.decode_codes(codes, bandwidth_id=2)
    with pytest.raises(InputError, match=r"valid codebook counts: \[2, 4, 8, 16\]"):
        enc.decode_codes(torch.zeros(3, 10, dtype=torch.long))
    inferred = enc.decode_codes(codes)
    assert torch.equal(inferred, enc.decode(enc.codes_to_features(codes), bandwidth_id=1))


@pytest.mark.parametrize("given", [1, [1], (1,), torch.tensor(1), torch.tensor([1])])
def test_one_bandwidth_id_may_be_an_int_or_a_one_element_sequence_everywhere(enc: Vocos, given: object) -> None:
    codes = torch.randint(0, 1024, (4, 12))
    assert enc.num_codebooks(given) == 4  # type: ignore[arg-type]
    assert torch.equal(enc.decode_codes(codes, bandwidth_id=given), enc.decode_codes(codes, bandwidth_id=1))  # type: ignore[arg-type]
    stream = enc.stream(bandwidth_id=given)  # type: ignore[arg-type]
    streamed = torch.cat([stream.push_codes(codes), stream.flush()])
    assert torch.allclose(streamed, enc.decode_codes(codes)[0], rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="expected 1 or 1 ids, got 2"):
        enc.num_codebooks([1, 2])  # type: ignore[arg-type]


def test_mel_model_refuses_codes(mel: Vocos) -> None:
    with pytest.raises(InputError, match="mel model"):
        mel.codes_to_features(torch.zeros(2, 5, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_keeps_features_and_encoder_in_float32(
    dtype: torch.dtype, shared_encodec_weights: Path
) -> None:
    mel32 = Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny")
    mel16 = Vocos.from_pretrained(REFERENCE / "vocos-mel-tiny").to(dtype)
    audio = 0.1 * torch.randn(4000)
    features = mel16.audio_to_features(audio)
    assert features.dtype == torch.float32
    assert torch.equal(features, mel32.audio_to_features(audio))
    out, ref = mel16.decode(features)[0], mel32.decode(features)[0]
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max() / ref.abs().max()) < 5e-2  # half-precision backbone
    enc = Vocos.from_pretrained(REFERENCE / "vocos-encodec-tiny", encodec_weights=shared_encodec_weights)
    codes32 = enc.feature_extractor.encoder().encode(audio[None], 6.0)  # type: ignore[operator]
    enc.to(dtype)
    codes16 = enc.feature_extractor.encoder().encode(audio[None], 6.0)  # type: ignore[operator]
    assert torch.equal(codes16, codes32)
    assert enc.decode_batch([enc.audio_to_features(audio, bandwidth_id=2)[0]], [2])[0].dtype == torch.float32


@pytest.mark.parametrize(("kind", "padding", "n_fft", "hop"), [
    ("mel", "center", 1024, 256), ("mel", "same", 1024, 256), ("mel", "same", 512, 256), ("mel", "center", 512, 256),
    ("hifigan-mel", "same", 1024, 256), ("hifigan-mel", "same", 512, 256), ("hifigan-mel", "center", 1024, 256),
])
def test_the_shortest_audio_taken_gives_a_frame_and_one_sample_less_is_refused(
        kind: str, padding: str, n_fft: int, hop: int) -> None:
    """With `same` padding and a hop over a third of the window (n_fft 512, hop 256), the reflect-padding bound
    alone let through audio shorter than one window: no frames, an assertion in the steps and a 500 from
    /resynthesize."""
    from vocos_core.testing import checkpoint_config, random_model

    config = checkpoint_config(kind, dim=16, padding=padding)  # type: ignore[arg-type]
    config["feature_extractor"]["init_args"].update(n_fft=n_fft, hop_length=hop)
    if kind == "hifigan-mel":
        config["feature_extractor"]["init_args"]["win_length"] = n_fft
    config["head"]["init_args"].update(n_fft=n_fft, hop_length=hop)
    model = random_model(config).eval()
    shortest = model.min_audio_samples()
    assert model.audio_to_features(torch.randn(1, shortest)).shape[-1] >= 1
    with pytest.raises(InputError, match=f"need at least {shortest} samples, got {shortest - 1}"):
        model.audio_to_features(torch.randn(1, shortest - 1))
