"""CORS for browser pages on other origins (VOCOS_CORS_ORIGINS): the headers on answers and errors, preflights
without a key (in the access log, not in the metrics), the setting's checks, and the Origin of stream handshakes."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest
import websockets
from service_helpers import AppFactory, live_server, settings_with
from starlette.testclient import WebSocketDenialResponse

from service.__main__ import parse_settings
from service.runtime.models import ServedModel
from service.settings import Settings
from service.testing import npy_bytes

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
KEY = "cors-test-key-41"
NPY = {"content-type": "application/x-npy"}
MEL = np.random.default_rng(0).uniform(-4, 0, (100, 12)).astype(np.float32)
EXPOSED = {"x-audio-duration", "x-model", "x-model-source", "x-sample-rate", "x-request-id", "retry-after"}


def preflight(origin: str, method: str = "POST",
              headers: str = "authorization,content-type,x-request-id,x-request-timeout") -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": method, "access-control-request-headers": headers}


def cors_headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def requests_counted(app: Any) -> float:
    return sum(sample.value for family in app.state.service.metrics.registry.collect()
               if family.name == "vocos_requests" for sample in family.samples if sample.name.endswith("_total"))


@pytest.mark.asyncio
async def test_only_the_setting_turns_cors_headers_on(make_app: AppFactory) -> None:
    for origins in ("", APP):
        async with make_app(cors_origins=origins) as h:
            answer = await h.client.post("/decode/mel", content=npy_bytes(MEL), headers={**NPY, "origin": APP})
            asked = await h.client.options("/decode/mel", headers=preflight(APP))
        assert answer.status_code == 200, answer.text
        if not origins:  # as before the setting: nothing, and a preflight is an OPTIONS the route does not take
            assert cors_headers(answer) == {} and cors_headers(asked) == {} and asked.status_code == 405
        else:
            assert answer.headers["access-control-allow-origin"] == APP
            assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == APP


@pytest.mark.asyncio
async def test_an_allowed_origin_reads_answers_and_the_errors_of_the_middleware_and_the_routes(
        make_app: AppFactory) -> None:
    async with make_app(cors_origins=f"http://localhost:3000,{APP}", api_keys=KEY, max_body_bytes=6000) as h:
        auth = {"authorization": f"Bearer {KEY}", "origin": APP}
        ok = await h.client.post("/decode/mel", content=npy_bytes(MEL), headers={**NPY, **auth})
        no_key = await h.client.post("/decode/mel", content=npy_bytes(MEL), headers={**NPY, "origin": APP})
        too_large = await h.client.post("/decode/mel", content=npy_bytes(np.tile(MEL, 2)), headers={**NPY, **auth})
        bad_query = await h.client.post("/decode/mel?nope=1", content=npy_bytes(MEL[:, :4]), headers={**NPY, **auth})
    assert ok.status_code == 200 and ok.headers["x-audio-duration"]
    statuses = [(r.status_code, r.json()["error"]["type"]) for r in (no_key, too_large, bad_query)]
    assert statuses == [(401, "unauthorized"), (413, "payload_too_large"), (422, "invalid_parameter")]
    for answer in (ok, no_key, too_large, bad_query):  # 401 by the middleware, 413 and 422 by the routes
        assert answer.headers["access-control-allow-origin"] == APP, answer.status_code
        exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
        assert exposed >= EXPOSED
        assert "origin" in answer.headers["vary"].lower()  # a cache keeps one answer per origin
        assert "access-control-allow-credentials" not in answer.headers  # the key goes in a header, no cookie


@pytest.mark.asyncio
async def test_another_origin_is_granted_nothing(make_app: AppFactory) -> None:
    async with make_app(cors_origins=APP, api_keys=KEY) as h:
        auth = {"authorization": f"Bearer {KEY}"}
        for origin in (OTHER, "https://app.example.com:8443", "http://app.example.com", "null"):
            ok = await h.client.post("/decode/mel", content=npy_bytes(MEL), headers={**NPY, **auth, "origin": origin})
            no_key = await h.client.post("/decode/mel", content=npy_bytes(MEL), headers={**NPY, "origin": origin})
            asked = await h.client.options("/decode/mel", headers=preflight(origin))
            assert (ok.status_code, no_key.status_code) == (200, 401)  # the server serves; the browser hides it
            assert asked.status_code == 400 and "Disallowed CORS origin" in asked.text
            for answer in (ok, no_key, asked):
                assert "access-control-allow-origin" not in answer.headers, (origin, answer.status_code)


@pytest.mark.asyncio
async def test_a_preflight_needs_no_key_and_is_logged_but_not_counted(make_app: AppFactory,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "service.access")
    async with make_app(cors_origins=APP, api_keys=KEY, metrics_require_key=True) as h:
        counted = requests_counted(h.app)
        asked = await h.client.options("/decode/mel?model=mel&format=flac",
                                       headers={**preflight(APP), "x-request-id": "pre-1"})
        other = await h.client.options("/metrics", headers=preflight(APP, "GET", "authorization"))
        assert requests_counted(h.app) == counted  # neither a request of the API nor a failed key
        # the actual request still needs the key
        refused = await h.client.post("/decode/mel", content=npy_bytes(MEL), headers={**NPY, "origin": APP})
        assert refused.status_code == 401 and requests_counted(h.app) == counted + 1
    assert asked.status_code == 200 and other.status_code == 200
    assert asked.headers["access-control-allow-origin"] == APP
    assert {m.strip() for m in asked.headers["access-control-allow-methods"].split(",")} == {"GET", "POST", "OPTIONS"}
    allowed = {h.strip().lower() for h in asked.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "accept", "x-request-id", "x-request-timeout"} <= allowed
    assert asked.headers["access-control-max-age"] == "3600"
    assert asked.headers["x-request-id"] == "pre-1"
    lines = [r for r in caplog.records if r.name == "service.access" and r.fields["method"] == "OPTIONS"]
    assert [(r.fields["path"], r.fields["status"]) for r in lines] == [("/decode/mel?model=mel&format=flac", 200),
                                                                       ("/metrics", 200)]
    assert lines[0].fields["request_id"] == "pre-1"


@pytest.mark.parametrize(("value", "message"), [
    ("https://app.example.com/", "entry 1 ('https://app.example.com/') is no origin; expected scheme://host[:port]"),
    ("https://a.example.com,app.example.com", "entry 2 ('app.example.com') is no origin"),
    ("https://app.example.com/tts", "with no path"),
    ("https://app.example.com:99999", "is no origin"),
    (f"*,{APP}", "'*' allows every origin and stands alone"),
    ("null", "'null' is the origin of sandboxed frames and local files"),
])
def test_a_bad_value_stops_the_start_in_one_line_naming_the_setting(value: str, message: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_settings(["--cors-origins", value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "usage:" not in err
    assert "invalid cors_origins (VOCOS_CORS_ORIGINS): " in err and message in err, err


def test_origins_are_kept_as_browsers_write_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCOS_CORS_ORIGINS", " HTTPS://App.Example.com:443, http://localhost:3000,,http://[::1]:80 ")
    assert Settings().cors_origin_list == (APP, "http://localhost:3000", "http://[::1]")
    assert Settings(cors_origins="*").cors_origin_list == ("*",)
    assert Settings().model_copy(update={"cors_origins": ""}).cors_origin_list == ()


@pytest.mark.asyncio
async def test_a_stream_handshake_from_another_origin_is_refused_with_403(
        base_settings: Settings, models: dict[str, ServedModel], caplog: pytest.LogCaptureFixture) -> None:
    async with live_server(settings_with(base_settings, cors_origins=APP), models) as server:
        caplog.set_level(logging.INFO, "uvicorn.error")  # the test server's uvicorn logs warnings only
        url = f"ws://127.0.0.1:{server.port}/stream/mel"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, origin=websockets.Origin(OTHER),
                                     additional_headers={"X-Request-Id": "page-1"})
        answer = refused.value.response
        # The refusal says why, under the stream's request id, and is logged once.
        assert answer.status_code == 403 and answer.headers["X-Request-Id"] == "page-1"
        assert json.loads(answer.body)["error"] == {
            "type": "forbidden_origin", "request_id": "page-1",
            "message": f"a page of '{OTHER}' may not open streams: that origin is not in VOCOS_CORS_ORIGINS"}
        lines = [r.getMessage() for r in caplog.records if '"WebSocket /stream/mel" 403' in r.getMessage()]
        assert len(lines) == 1, lines
        metrics = (await server.client.get("/metrics")).text
        assert 'vocos_streams_refused_total{endpoint="/stream/mel",status="403"} 1.0' in metrics
        for origin in (APP, None):  # the page allowed, and a client that is no browser
            async with websockets.connect(url, origin=websockets.Origin(origin) if origin else None) as ws:
                assert '"type":"start"' in (await ws.recv()).replace(" ", "")


def test_a_stream_handshake_is_checked_only_against_a_list_of_origins(client_for: Any) -> None:
    for origins, accepted in (("", True), (APP, False), ("*", True)):
        try:
            with client_for(cors_origins=origins).websocket_connect("/stream/mel", headers={"origin": OTHER}) as ws:
                assert '"start"' in ws.receive_text()
            opened = True
        except WebSocketDenialResponse as refused:
            assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden_origin"
            opened = False
        assert opened == accepted, origins
