"""The access log: one record per HTTP request and per stream when it ends, with the request id of its
answer, its status, duration and size; JSON lines with the same fields, redacted; off by a setting."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import websockets
from service_helpers import AppFactory, live_server, settings_with, wait_until
from starlette.websockets import WebSocket

from service.runtime.logs import JsonFormatter, RedactSecrets
from service.runtime.models import ServedModel
from service.settings import Settings
from service.testing import npy_bytes as npy
from vocos_client import AsyncClient

MEL = np.random.default_rng(0).uniform(-4, 0, (100, 12)).astype(np.float32)


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "service.access"]


@pytest.mark.asyncio
async def test_each_request_is_logged_once_with_its_id_status_duration_and_size(
        make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "service.access")
    async with make_app() as h:
        ok = await h.client.post("/decode/mel?sample_rate=16000", content=npy(MEL),
                                 headers={"content-type": "application/x-npy", "x-request-id": "tts-42"})
        bad = await h.client.post("/decode/mel", content=b"no npy", headers={"content-type": "application/x-npy"})
    assert (ok.status_code, bad.status_code) == (200, 400)
    first, second = access_records(caplog)
    assert first.fields == {"request_id": "tts-42", "client": first.fields["client"], "method": "POST",
                            "path": "/decode/mel?sample_rate=16000", "status": 200,
                            "duration_s": first.fields["duration_s"], "bytes": len(ok.content)}
    assert 0 < first.fields["duration_s"] < 30
    text = first.getMessage()
    assert '"POST /decode/mel?sample_rate=16000 HTTP/1.1" 200 ' in text and text.endswith(" id=tts-42")
    assert f" {len(ok.content)}B " in text
    assert (second.fields["status"], second.fields["request_id"]) == (400, bad.headers["x-request-id"])


@pytest.mark.asyncio
async def test_an_answer_that_fails_after_it_began_is_logged_as_500_not_as_the_clients_leaving(
        base_settings: Settings, models: dict[str, ServedModel], caplog: pytest.LogCaptureFixture) -> None:
    """A failure of ours once the answer's first bytes were sent was recorded as 499, the status of a client
    that left, hiding the server's fault from the access log and the error-rate alert."""
    from starlette.responses import StreamingResponse

    async def breaks_off() -> AsyncIterator[bytes]:
        yield b"first piece"
        raise RuntimeError("a bug after the answer began")

    caplog.set_level(logging.INFO, "service.access")
    async with live_server(base_settings, models) as server:
        server.app.add_api_route("/breaks-off", lambda: StreamingResponse(breaks_off()))
        with pytest.raises(httpx.RemoteProtocolError):  # the answer is cut short
            await server.client.get("/breaks-off")
        await wait_until(lambda: len(access_records(caplog)) == 1)
    (record,) = access_records(caplog)
    assert (record.fields["path"], record.fields["status"]) == ("/breaks-off", 500)


@pytest.mark.asyncio
async def test_a_head_answer_is_logged_with_the_body_it_sent_none(
        make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "service.access")
    async with make_app() as h:
        assert (await h.client.head("/healthz")).status_code == 200
    (record,) = access_records(caplog)
    assert (record.fields["method"], record.fields["bytes"]) == ("HEAD", 0)


@pytest.mark.asyncio
async def test_the_access_log_is_off_with_its_setting(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "service.access")
    async with make_app(access_log=False) as h:
        assert (await h.client.get("/models")).status_code == 200
    assert access_records(caplog) == []


@pytest.mark.asyncio
async def test_a_stream_is_logged_when_it_ends_with_its_status_and_samples(
        base_settings: Settings, models: dict[str, ServedModel], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with live_server(base_settings, models) as server:
        url = f"ws://127.0.0.1:{server.port}/stream/mel"
        async with websockets.connect(url, additional_headers={"X-Request-Id": "st-1"}) as ws:
            await ws.recv()  # start
            await ws.send(npy(MEL))
            await ws.send(json.dumps({"type": "end"}))
            done = [m async for m in ws][-1]
        async with websockets.connect(url + "?model=nope") as ws:
            refused = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosedError):
                await ws.recv()
    ok, missing = access_records(caplog)
    assert (ok.fields["status"], ok.fields["request_id"], ok.fields["method"]) == (200, "st-1", "WebSocket")
    assert ok.fields["samples"] == json.loads(done)["samples"] > 0
    assert (missing.fields["status"], missing.fields["path"]) == (404, "/stream/mel?model=nope")
    assert missing.fields["request_id"] == refused["request_id"]
    # uvicorn's own line for each handshake accepted is dropped: the access line is the stream's one line
    assert not [r for r in caplog.records if r.name == "uvicorn.error" and "[accepted]" in r.getMessage()]


@pytest.mark.asyncio
async def test_a_stream_whose_client_closes_on_its_done_message_is_logged_as_200(
        base_settings: Settings, models: dict[str, ServedModel], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """vocos_client closes as soon as the done message is in. That close raced the server's own, which was
    watched for the client's leaving: on a loaded server (here a slow close) the stream, whole and counted
    "ok", was logged as 499, a client that left."""
    close = WebSocket.close

    async def slow_close(self: WebSocket, code: int = 1000, reason: str | None = None) -> None:
        await asyncio.sleep(0.3)  # the client's close frame comes in first
        await close(self, code, reason)

    monkeypatch.setattr(WebSocket, "close", slow_close)
    caplog.set_level(logging.INFO)
    async with live_server(base_settings, models) as server:
        async with AsyncClient(f"http://127.0.0.1:{server.port}") as client:
            for _ in range(3):
                assert sum([chunk.size async for chunk in client.stream_mel_frames([MEL])]) == 11 * 256
        await wait_until(lambda: len(access_records(caplog)) == 3)
    assert [r.fields["status"] for r in access_records(caplog)] == [200, 200, 200]


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "status"), [("/stream/nope", 404), ("/stream/mel%0A", 400)])
async def test_a_handshake_refused_before_the_stream_begins_is_logged_too(
        base_settings: Settings, models: dict[str, ServedModel], caplog: pytest.LogCaptureFixture, path: str,
        status: int) -> None:
    caplog.set_level(logging.INFO)
    async with live_server(base_settings, models) as server:
        caplog.set_level(logging.INFO, "uvicorn.error")  # the test server's uvicorn logs warnings only
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(f"ws://127.0.0.1:{server.port}{path}")
    lines = [r.getMessage() for r in caplog.records if '"WebSocket ' in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith(f'"WebSocket {path}" {status}'), lines


def test_json_lines_carry_the_fields_redacted_and_the_traceback() -> None:
    formatter, redaction = JsonFormatter(), RedactSecrets(["k3y-secret"])
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, '"%s" %d', ("/m?api_key=x", 200), None)
    record.fields = {"path": "/m?api_key=x&model=k3y-secret", "status": 200}
    assert redaction.filter(record)
    entry = json.loads(formatter.format(record))
    assert entry["message"] == '"/m?api_key=***" 200'
    assert (entry["path"], entry["status"], entry["level"], entry["logger"]) == (
        "/m?api_key=***&model=***", 200, "INFO", "service.access")
    assert entry["time"].endswith("+00:00")
    try:
        raise ValueError("k3y-secret in a message")
    except ValueError:
        failed = logging.LogRecord("service", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert redaction.filter(failed)
    entry = json.loads(formatter.format(failed))
    assert "ValueError: *** in a message" in entry["exception"] and "k3y" not in json.dumps(entry)


def test_log_format_and_access_log_are_settings(base_settings: Settings) -> None:
    settings = settings_with(base_settings, log_format="JSON", access_log=False)
    assert (settings.log_format, settings.access_log) == ("json", False)
    with pytest.raises(ValueError, match="log_format"):
        settings_with(base_settings, log_format="xml")


@pytest.mark.parametrize(("client", "shown"), [
    (("10.0.3.7", 51234), "10.0.3.7:51234"), (["testclient", 50000], "testclient:50000"),
    (("testclient", None), "testclient"), (None, "-"), ((), "-"),
])
def test_any_asgi_servers_client_is_shown(client: object, shown: str) -> None:
    """schemathesis's test client gives ("testclient", None), on which uvicorn's helper raised inside the
    middleware's recording, replacing the answer with a 500."""
    from service.http.access import _client_and_target

    scope = {"type": "http", "client": client, "path": "/a b", "query_string": b"x=1"}
    assert _client_and_target(scope) == (shown, "/a%20b?x=1")


@pytest.mark.asyncio
async def test_a_long_query_is_clipped_in_the_access_line_with_a_key_at_the_cut_still_hidden(
        make_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone (the probes need no key) could have a 60 KB query written whole into the access line, twice in
    JSON; the clip comes after the redaction, or the first part of a key cut in two would be written."""
    from service.http.access import MAX_TARGET_CHARS
    from service.runtime import logs

    key = "k3y-Secret-0123456789"
    monkeypatch.setattr(logs, "_configured_secrets", (key,))
    caplog.set_level(logging.INFO, "service.access")
    filler = "A" * (MAX_TARGET_CHARS - len("/healthz?x=") - 5)  # the key straddles the cut
    async with make_app() as h:
        assert (await h.client.get(f"/healthz?x={filler}{key}")).status_code == 200
        assert (await h.client.get("/healthz?x=" + "B" * 60_000)).status_code == 200
    straddling, long = access_records(caplog)
    assert straddling.fields["path"] == f"/healthz?x={filler}***"
    assert long.fields["path"] == ("/healthz?x=" + "B" * 60_000)[:MAX_TARGET_CHARS] + "…"
    assert len(long.getMessage()) < MAX_TARGET_CHARS + 200
    assert key[:5] not in straddling.getMessage()


def test_a_quote_in_a_query_cannot_end_the_quoted_request_of_a_text_line() -> None:
    """uvicorn passes a query holding a raw '"' on (h11 takes it): the line a log parser then read showed another
    request, status and id than the request's."""
    from service.http.access import _client_and_target

    scope = {"type": "http", "client": ("10.0.0.1", 1), "path": "/healthz",
             "query_string": b'x="+200+0.001s+0B+id=forged+"&y=caf\xc3\xa9\\'}
    assert _client_and_target(scope)[1] == "/healthz?x=%22+200+0.001s+0B+id=forged+%22&y=caf%C3%A9%5C"


def test_keys_in_mapping_arguments_are_redacted() -> None:
    """logging's other form of arguments, ``log.info("%(key)s", {...})``, went out as given."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent %(auth)s for %(n)d", ({"auth": "k3y-s", "n": 2},),
                               None)
    assert RedactSecrets(["k3y-s"]).filter(record)
    assert record.getMessage() == "sent *** for 2"


def test_a_long_argument_is_clipped_after_its_redaction() -> None:
    """uvicorn's own line for a refused handshake wrote a client's whole 60 KB query, which anyone can send."""
    from service.runtime.logs import MAX_ARGUMENT_CHARS

    key = "k3y-Secret-0123456789"
    path = "/stream/nope?x=" + "A" * (MAX_ARGUMENT_CHARS - len("/stream/nope?x=") - 5) + key + "B" * 60_000
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" %d',
                               ("127.0.0.1:5", path, 403), None)
    assert RedactSecrets([key]).filter(record)
    message = record.getMessage()
    assert len(message) < MAX_ARGUMENT_CHARS + 100 and message.endswith('B…" 403') and "A***B" in message
    assert key[:5] not in message
