"""multipart/form-data uploads on /resynthesize, as curl -F and browser forms send them: the same audio
as the raw body, the same body limits, and clear errors for malformed or file-less forms."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from service_helpers import AppFactory, AppHarness, tone

from service.testing import audio_file

pytestmark = pytest.mark.asyncio

BOUNDARY = "------------------------d74496d66958873e"  # as curl makes them


def curl_form(parts: list[tuple[str, str | None, str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """The body ``curl -F name=@file`` sends: each part ``(name, filename, content type, data)``."""
    body = b""
    for name, filename, content_type, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        head += f"Content-Type: {content_type}\r\n" if content_type else ""
        body += head.encode() + b"\r\n" + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def form_type(boundary: str = BOUNDARY) -> dict[str, str]:
    return {"content-type": f"multipart/form-data; boundary={boundary}"}


def assert_error(response: httpx.Response, status: int, error_type: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error_type
    assert message in response.json()["error"]["message"], response.json()["error"]["message"]


@pytest.mark.parametrize(("container", "rate", "part_type"), [("WAV", 16000, "audio/x-wav"),
                                                              ("FLAC", 44100, "application/octet-stream"),
                                                              ("FLAC", 22050, None)])
@pytest.mark.parametrize("query", ["model=mel", "model=encodec&bandwidth_id=2"])
async def test_a_curl_form_gives_the_audio_of_the_raw_body(
    app: AppHarness, container: str, rate: int, part_type: str | None, query: str
) -> None:
    audio = audio_file(tone(0.4, rate, channels=2), rate, container)
    raw = await app.client.post(f"/resynthesize?{query}", content=audio, headers={"content-type": "audio/wav"})
    name = f"speech.{container.lower()}"
    form = await app.client.post(f"/resynthesize?{query}", content=curl_form([("file", name, part_type, audio)]),
                                 headers=form_type())
    assert raw.status_code == form.status_code == 200, form.text
    assert form.content == raw.content


async def test_a_browser_form_with_other_fields_and_the_only_file_part_under_another_name(app: AppHarness) -> None:
    audio = audio_file(tone(0.3, 24000), 24000)
    raw = await app.client.post("/resynthesize", content=audio, headers={"content-type": "audio/wav"})
    by_httpx = await app.client.post("/resynthesize", files={"file": ("a.wav", audio, "audio/wav")},
                                     data={"note": "hello"})
    other_name = curl_form([("note", None, None, b"hello"), ("upload", "a.wav", "audio/wav", audio)])
    only_file = await app.client.post("/resynthesize", content=other_name, headers=form_type())
    for response in (by_httpx, only_file):
        assert response.status_code == 200, response.text
        assert response.content == raw.content


async def test_a_preamble_before_the_first_boundary_is_ignored(app: AppHarness) -> None:
    """RFC 2046 lets a form begin with a preamble; it was a 400 that blamed the boundary."""
    audio = audio_file(tone(0.3, 24000), 24000)
    form = curl_form([("file", "a.wav", "audio/wav", audio)])
    plain = await app.client.post("/resynthesize", content=form, headers=form_type())
    preamble = b"This is a multi-part message in MIME format.\r\n"
    prefaced = await app.client.post("/resynthesize", content=preamble + form, headers=form_type())
    assert plain.status_code == prefaced.status_code == 200, prefaced.text
    assert prefaced.content == plain.content


async def test_malformed_forms_are_400(app: AppHarness) -> None:
    audio = audio_file(tone(0.2, 24000), 24000)
    body = curl_form([("file", "a.wav", "audio/wav", audio)])
    c = app.client
    assert_error(await c.post("/resynthesize", content=body, headers={"content-type": "multipart/form-data"}),
                 400, "malformed_payload", "has no boundary parameter")
    assert_error(await c.post("/resynthesize", content=body, headers=form_type("another-boundary")),
                 400, "malformed_payload", "malformed multipart/form-data body (Expected boundary character")
    assert_error(await c.post("/resynthesize", content=body[: len(body) // 2], headers=form_type()),
                 400, "malformed_payload", f"ends before its closing boundary '--{BOUNDARY}--'")
    broken = body.replace(b"Content-Disposition: form-data", b"Content-Disposition form-data", 1)
    assert_error(await c.post("/resynthesize", content=broken, headers=form_type()),
                 400, "malformed_payload", "malformed multipart/form-data body")
    not_audio = curl_form([("file", "a.txt", "text/plain", b"hello")])
    assert_error(await c.post("/resynthesize", content=not_audio, headers=form_type()),
                 415, "unsupported_media_type", "'text/plain'")
    garbage = curl_form([("file", "a.wav", "audio/wav", b"RIFF....WAVEjunk")])
    assert_error(await c.post("/resynthesize", content=garbage, headers=form_type()),
                 400, "malformed_payload", "could not decode the audio file")


async def test_a_form_of_too_many_parts_is_400_before_it_costs_memory(app: AppHarness) -> None:
    """A 10-byte empty part costs some hundred bytes to keep: a 60 MB body of them took 3.5 GB."""
    wav = audio_file(tone(0.2, 24000), 24000)
    many = b"".join(f"--{BOUNDARY}\r\n\r\nv\r\n".encode() for _ in range(100_000))
    body = many + curl_form([("file", "a.wav", "audio/wav", wav)])
    assert_error(await app.client.post("/resynthesize", content=body, headers=form_type()), 400, "malformed_payload",
                 "the multipart/form-data body has more than 64 parts")
    fields = [(f"field{i}", None, None, b"x") for i in range(10)]  # a browser form's few fields are fine
    ok = await app.client.post("/resynthesize", content=curl_form([*fields, ("file", "a.wav", "audio/wav", wav)]),
                               headers=form_type())
    assert ok.status_code == 200, ok.text


async def test_a_form_without_one_file_part_is_422(app: AppHarness) -> None:
    audio = audio_file(tone(0.2, 24000), 24000)
    c = app.client
    fields_only = curl_form([("note", None, None, b"hello"), ("lang", None, None, b"en")])
    assert_error(await c.post("/resynthesize", content=fields_only, headers=form_type()),
                 422, "invalid_input", "has no file part (parts: 'note', 'lang'); expected one part named 'file'")
    assert_error(await c.post("/resynthesize", content=f"--{BOUNDARY}--\r\n".encode(), headers=form_type()),
                 422, "invalid_input", "has no file part (parts: none)")
    two = curl_form([("a", "a.wav", "audio/wav", audio), ("b", "b.wav", "audio/wav", audio)])
    assert_error(await c.post("/resynthesize", content=two, headers=form_type()),
                 422, "invalid_input", "has 2 file parts")


@pytest.mark.parametrize("field", ["model", "bandwidth", "bandwidth_id", "format", "sample_rate", "stream"])
async def test_an_option_sent_as_a_form_field_is_refused_not_ignored(app: AppHarness, field: str) -> None:
    """``curl -F file=@a.wav -F model=encodec -F bandwidth=6`` was answered 200 by the default mel model: the
    fields were dropped without a word, where a query parameter or JSON key the endpoint does not know is 422."""
    audio = audio_file(tone(0.2, 24000), 24000)
    form = curl_form([("file", "a.wav", "audio/wav", audio), (field, None, None, b"encodec")])
    assert_error(await app.client.post("/resynthesize", content=form, headers=form_type()), 422, "invalid_parameter",
                 f"'{field}': an option sent as a form field; the form carries only the audio file, and options "
                 f"go in the query string, as ?{field}=...")
    by_httpx = await app.client.post("/resynthesize", files={"file": ("a.wav", audio, "audio/wav")},
                                     data={"model": "encodec", "bandwidth": "6"})
    assert_error(by_httpx, 422, "invalid_parameter", "'model': an option sent as a form field")


@pytest.mark.parametrize(("field", "option"), [("bandwith", "bandwidth"), ("sampleRate", "sample_rate"),
                                               ("sample-rate", "sample_rate"), ("Model", "model")])
async def test_a_form_field_named_nearly_as_an_option_is_refused(app: AppHarness, field: str, option: str) -> None:
    """A misspelt option in a form (``-F bandwith=6``) was ignored as any other field is, and the answer
    came at the default bandwidth without a word."""
    audio = audio_file(tone(0.2, 24000), 24000)
    form = curl_form([("file", "a.wav", "audio/wav", audio), (field, None, None, b"6")])
    assert_error(await app.client.post("/resynthesize", content=form, headers=form_type()), 422, "invalid_parameter",
                 f"'{field}': a form field named like the option '{option}'; the form carries only the audio file")


async def test_a_form_over_the_body_limit_is_413(make_app: AppFactory) -> None:
    audio = audio_file(np.zeros(16000, np.float32), 16000)  # 32 kB
    async with make_app(max_body_bytes=20_000) as h:
        response = await h.client.post("/resynthesize", content=curl_form([("file", "a.wav", "audio/wav", audio)]),
                                       headers=form_type())
        assert_error(response, 413, "payload_too_large", "(VOCOS_MAX_BODY_BYTES)")
        small = audio_file(np.zeros(4000, np.float32), 16000)
        response = await h.client.post("/resynthesize", content=curl_form([("file", "a.wav", "audio/wav", small)]),
                                       headers=form_type())
        assert response.status_code == 200, response.text


async def test_openapi_lists_the_form(app: AppHarness) -> None:
    body = (await app.client.get("/openapi.json")).json()["paths"]["/resynthesize"]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]
    assert form["schema"]["required"] == ["file"] and form["schema"]["properties"]["file"]["format"] == "binary"
    assert "audio/wav" in body["content"]
