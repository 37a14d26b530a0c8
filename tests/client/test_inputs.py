"""What the client refuses before sending (with a ValueError saying what it expected), and answers it cannot read."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from vocos_client import AsyncClient, Client, RetryPolicy, VocosClientError
from vocos_client.session import frame_messages, frames_iterable
from vocos_client.wire import codes_body, float_wav, mel_body


def _client(answer: httpx.Response) -> Client:
    return Client("http://vocos.test", retry=RetryPolicy(retries=0),
                  transport=httpx.MockTransport(lambda request: answer))


@pytest.mark.parametrize(("samples", "message"), [
    (np.zeros(0, np.float32), r"\(S,\) or \(S, channels\) with S >= 1 and channels >= 1, got shape \(0,\)"),
    (np.zeros((480, 0), np.float32), r"channels >= 1, got shape \(480, 0\)"),  # was a ZeroDivisionError
    (np.zeros((2, 48000), np.float32), r"look channels-first; pass \(S, channels\)"),
    (np.zeros((2, 3, 4), np.float32), r"got shape \(2, 3, 4\)"),
])
def test_samples_no_wav_holds_are_refused_before_sending(samples: np.ndarray, message: str) -> None:
    with _client(httpx.Response(500)) as client, pytest.raises(ValueError, match=message):
        client.resynthesize((samples, 24000))


@pytest.mark.parametrize("rate", [0, -1, 22050.5, 2**30, "24000", None, float("inf")])
def test_a_sample_rate_no_wav_header_holds_is_refused_before_sending(rate: object) -> None:
    """0 went out in a header the server could not read ("could not decode the audio file"), -1 and 2**31 raised
    OverflowError ("can't convert negative int to unsigned"), 22050.5 went out as 22050."""
    with _client(httpx.Response(500)) as client, \
            pytest.raises(ValueError, match=r"must be a whole number of Hz from 1 to 1073741823 \(a WAV header's "
                          r"32-bit byte rate at 1 channel\(s\) of float32\), got " + re.escape(repr(rate))):
        client.resynthesize((np.zeros(480, np.float32), rate))  # type: ignore[arg-type]
    with _client(httpx.Response(500)) as client, pytest.raises(ValueError, match=r"from 1 to 536870911 .* at 2 ch"):
        client.resynthesize((np.zeros((480, 2), np.float32), 2**29))


def test_whole_rates_of_any_number_type_are_taken() -> None:
    bodies: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200, content=float_wav(np.zeros(4, np.float32), 16000))

    with Client("http://vocos.test", transport=httpx.MockTransport(answer)) as client:
        for rate in (16000, 16000.0, np.int64(16000)):
            client.resynthesize((np.zeros(480, np.float32), rate))  # type: ignore[arg-type]
    assert [int.from_bytes(body[24:28], "little") for body in bodies] == [16000] * 3


@pytest.mark.parametrize(("audio", "hint"), [(np.zeros(480, np.float32), "ndarray (pass (samples, rate))"),
                                             ([np.zeros(480, np.float32), 24000], "list"),
                                             ])
def test_audio_of_another_kind_is_refused_naming_what_is_taken(audio: object, hint: str) -> None:
    """Samples without their rate raised Path()'s "expected str, bytes or os.PathLike object, not ndarray"."""
    with _client(httpx.Response(500)) as client, \
            pytest.raises(TypeError, match=r"a file path, the bytes of an audio file, or a \(samples, sample_rate\) "
                          r"tuple; got " + re.escape(hint)):
        client.resynthesize(audio)  # type: ignore[arg-type]
    with _client(httpx.Response(500)) as client, \
            pytest.raises(TypeError, match=r"^audio as a tuple is \(samples, sample_rate\), got a tuple of 3 items$"):
        client.resynthesize((np.zeros(480, np.float32), 24000, 1))  # type: ignore[arg-type]


def test_a_url_without_its_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match=r"must start with http:// or https://, got '127.0.0.1:8000'"):
        Client("127.0.0.1:8000")


@pytest.mark.parametrize("timeout", [0, -1, "5", float("nan"), float("inf")])
def test_a_timeout_no_socket_takes_is_refused_when_the_client_is_made(timeout: object) -> None:
    """0 failed each call with "connection: Operation now in progress" (retried, as a connection error), -1 with
    the socket's "Timeout value out of range", "5" with "'str' object cannot be interpreted as an integer"."""
    message = r"^timeout must be a number of seconds > 0, or None for no limit; got " + re.escape(repr(timeout)) + "$"
    for kind in (Client, AsyncClient):
        with pytest.raises(ValueError, match=message):
            kind("http://vocos.test", timeout=timeout)  # type: ignore[arg-type]
    assert Client("http://vocos.test", timeout=None).timeout is None


def test_a_url_that_is_no_string_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"must start with http:// or https://, got None"):  # was an AttributeError
        Client(None)  # type: ignore[arg-type]


def test_uint64_codes_beyond_int64_are_sent_as_they_are_not_wrapped() -> None:
    huge = np.full((2, 3), 2**63 + 5, np.uint64)
    assert codes_body(huge).dtype == np.uint64 and int(codes_body(huge).max()) == 2**63 + 5
    assert codes_body(np.full((2, 3), 7, np.uint64)).dtype == np.int64


def test_a_mel_of_integers_is_sent_as_it_is_for_the_server_to_refuse_as_a_streams_frames_are() -> None:
    assert mel_body(np.zeros((100, 3), np.int32)).dtype == np.int32  # was cast to float32 and decoded
    assert mel_body([[0.5, 1.0]]).dtype == mel_body(np.zeros((1, 2), np.float16)).dtype == np.float32


@pytest.mark.parametrize(("values", "kind"), [(None, r"NoneType \(numpy dtype object\)"),
                                             ("abc", r"str \(numpy dtype <U3\)"),
                                             (np.array([{}]), r"ndarray \(numpy dtype object\)")])
def test_what_is_no_numeric_array_is_refused_before_sending(values: object, kind: str) -> None:
    """None raised numpy's "Object arrays cannot be saved when allow_pickle=False"; a string went out, and the
    server's 422 named a shape (1,) the caller never gave."""
    message = r"^expected a numeric array: \(n_mels, T\) floats, or \(K, T\) integer codes; got " + kind + "$"
    with _client(httpx.Response(500)) as client:
        with pytest.raises(TypeError, match=message):
            client.decode_mel(values)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=message):
            client.decode_encodec(values)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=message):  # a stream's frames, as its send() makes them
        frame_messages(values, None)  # type: ignore[arg-type]


def test_a_models_answer_without_models_is_a_protocol_error() -> None:
    with _client(httpx.Response(200, json={"status": "ok"})) as client, pytest.raises(VocosClientError) as caught:
        client.models()
    assert (caught.value.status, caught.value.error) == (0, "protocol") and "expected {\"models\"" in str(caught.value)


def test_a_frames_loop_given_one_whole_array_is_refused_before_connecting() -> None:
    """Its rows went out as frames, (T,) each, and the server's 422 named a shape the caller never gave."""
    mel = np.zeros((100, 40), np.float32)
    with Client("http://127.0.0.1:9", retry=RetryPolicy(retries=0)) as client, \
            pytest.raises(ValueError, match=r"iterable of \(C, t\) arrays .* shape \(100, 40\): pass \[frames\]"):
        client.stream_mel_frames(mel)
    with pytest.raises(ValueError, match=r"got one array of shape \(8, 40\)"):
        AsyncClient("http://127.0.0.1:9", retry=RetryPolicy(retries=0)).stream_encodec_frames(np.zeros((8, 40), int))
    torch = pytest.importorskip("torch")  # another library's array is one array too
    with pytest.raises(ValueError, match=r"got one array of shape \(100, 40\)"):
        frames_iterable(torch.zeros(100, 40))
    chunks = np.zeros((3, 100, 8), np.float32)  # a stack of chunks iterates into (C, t) chunks: it goes on
    assert frames_iterable(chunks) is chunks
