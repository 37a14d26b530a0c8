"""Access control with API keys: every endpoint but the probes and the browser pages refuses a missing
or wrong key, the pages name no route and the OpenAPI document stays behind the key, keys are
compared in constant time, never show up in logs, metrics or error bodies, and whether /metrics
needs a key is a setting."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from service.__main__ import parse_settings
from service.http.auth import KEY_SUBPROTOCOL_PREFIX, BearerAuth
from service.http.pages import ASSETS, PAGE_PATHS, PAGES, STATIC_DIR, STATIC_PREFIX
from service.testing import ServerProcess

KEYS = ("k3y-alpha-7f2c91d4e8", "k3y-beta-0b6a5e13c2")
NEAR_MISS = KEYS[0][:-1] + "5"
MEL_BODY = {"mel": [[0.0] * 8] * 100}


def every_path(openapi: dict) -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI document, the document itself, the browser
    pages and their assets, and paths that exist nowhere (one beside the assets)."""
    operations = [(method.upper(), path) for path, item in openapi["paths"].items() for method in item]
    pages = [("GET", path) for path in sorted(PAGE_PATHS)]
    nowhere = [("GET", "/nowhere"), ("GET", STATIC_PREFIX + "nowhere.js"), ("GET", "/docs/oauth2-redirect")]
    return [*operations, ("GET", "/openapi.json"), *pages, *nowhere]


@pytest.mark.asyncio
@pytest.mark.parametrize("metrics_require_key", [False, True])
async def test_every_endpoint_but_the_probes_refuses_missing_or_wrong_keys(make_app, metrics_require_key: bool) -> None:
    async with make_app(api_keys=",".join(KEYS), metrics_require_key=metrics_require_key) as app:
        openapi = app.app.openapi()
        public = {"/healthz", "/readyz"} | PAGE_PATHS | (set() if metrics_require_key else {"/metrics"})
        for method, path in every_path(openapi):
            for headers in ({}, {"authorization": f"Bearer {NEAR_MISS}"}, {"authorization": "Bearer"},
                            {"authorization": f"Basic {KEYS[0]}"}, {"authorization": f"bearer  {KEYS[0]}x"},
                            {"x-api-key": KEYS[0]}):
                response = await app.client.request(method, path, headers=headers, json=MEL_BODY)
                if path in public:
                    assert response.status_code == 200, (method, path, headers)
                else:
                    assert response.status_code == 401, (method, path, headers, response.status_code)
                    assert response.headers["www-authenticate"] == "Bearer"
                    assert response.json()["error"]["type"] == "unauthorized"
        for key in KEYS:  # either key opens every endpoint
            for method, path in every_path(openapi):
                response = await app.client.request(method, path, headers={"authorization": f"Bearer {key}"},
                                                    json=MEL_BODY)
                assert response.status_code != 401, (method, path)
            response = await app.client.post("/decode/mel", json=MEL_BODY, headers={"authorization": f"Bearer {key}"})
            assert response.status_code == 200


@pytest.mark.asyncio
async def test_the_pages_are_public_name_no_route_and_the_document_stays_behind_the_key(make_app) -> None:
    """The pages a browser needs before it can send a key are the same files on every server: they
    name no route but the ones the playground calls, nor anything of this server's configuration."""
    async with make_app(api_keys=",".join(KEYS), encodec_model="none") as app:
        operations = set(app.app.openapi()["paths"])
        assert {"/decode/mel", "/decode/encodec", "/resynthesize"} <= operations
        served = {}
        for path in sorted(PAGE_PATHS):
            response = await app.client.get(path)
            assert response.status_code == 200, path
            served[path] = response.content
        assert (await app.client.get("/openapi.json")).status_code == 401
        with_key = await app.client.get("/openapi.json", headers={"authorization": f"Bearer {KEYS[1]}"})
        assert with_key.status_code == 200
    called_by_the_playground = {"/resynthesize", "/readyz", "/models"}
    for path, content in served.items():
        # Our own files call routes by relative URL ("readyz"); the vendored bundles' words are not routes.
        ours = path in PAGES or ASSETS[path.removeprefix(STATIC_PREFIX)].file.parent == STATIC_DIR
        named = {r for r in operations if r.encode() in content or (ours and r[1:].encode() in content)}
        expected = called_by_the_playground if path == STATIC_PREFIX + "playground.js" else set()
        assert named <= expected, (path, named)
    async with make_app() as other:  # no keys, both models: the same bytes
        for path, content in served.items():
            assert (await other.client.get(path)).content == content, path
    assert set(served) == {*PAGES, *(STATIC_PREFIX + name for name in ASSETS)}


@pytest.mark.asyncio
async def test_without_keys_nothing_asks_for_one(make_app) -> None:
    async with make_app() as app:
        assert (await app.client.post("/decode/mel", json=MEL_BODY)).status_code == 200
        assert (await app.client.get("/metrics")).status_code == 200


def test_every_configured_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """hmac.compare_digest against every key, with no early exit, whether the first, the last or none match."""
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr("service.http.auth.hmac.compare_digest", spy)
    auth = BearerAuth(list(KEYS))
    for presented in (KEYS[0], KEYS[1]):
        compared.clear()
        auth.check(f"Bearer {presented}")
        assert compared == [k.encode() for k in KEYS]
    for wrong in (NEAR_MISS, "x", KEYS[0] * 3):
        compared.clear()
        with pytest.raises(Exception, match="invalid API key"):
            auth.check(f"Bearer {wrong}")
        assert compared == [k.encode() for k in KEYS]


@pytest.mark.asyncio
async def test_keys_never_appear_in_logs_metrics_or_errors(make_app, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = []
    async with make_app(api_keys=",".join(KEYS), metrics_require_key=True) as app:
        attempts = [
            {"authorization": f"Bearer {NEAR_MISS}"},
            {"authorization": f"Bearer {KEYS[0]}", "x-request-timeout": "-1"},  # authorised, then refused
            {"authorization": f"Bearer {KEYS[1]}", "content-type": "text/plain"},
            {"authorization": f"Basic {KEYS[1]}"},
        ]
        for headers in attempts:
            response = await app.client.post("/decode/mel", json=MEL_BODY, headers=headers)
            assert response.status_code in {401, 415, 422}
            bodies.append(response.text)
        ok = await app.client.post("/decode/mel", json=MEL_BODY, headers={"authorization": f"Bearer {KEYS[0]}"})
        assert ok.status_code == 200
        metrics = await app.client.get("/metrics", headers={"authorization": f"Bearer {KEYS[1]}"})
        assert metrics.status_code == 200
        settings_text = f"{app.state.settings!r} {app.state.settings} {app.state.settings.model_dump()}"
    for secret in (*KEYS, NEAR_MISS):
        assert secret not in caplog.text
        assert secret not in metrics.text
        assert secret not in settings_text
        assert all(secret not in body for body in bodies)
    assert len(caplog.records) > 0  # the capture saw the service's own log lines


def test_keys_from_the_environment_stay_secret_in_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCOS_API_KEYS", ",".join(KEYS))
    settings = parse_settings(["--mel-model", "none", "--encodec-model", "none"])
    assert settings.api_key_list == KEYS
    assert all(key not in f"{settings!r} {settings} {settings.model_dump_json()}" for key in KEYS)


@pytest.mark.slow
def test_keys_never_appear_in_the_servers_log_even_at_trace(tmp_path: Path, mel_checkpoint: Path) -> None:
    """A real server at VOCOS_LOG_LEVEL=trace, asked with the keys where a careless client puts them: in
    the query, as a model name, in the path, and as a browser offers one on a stream (a subprotocol, encoded).
    uvicorn's trace lines print each request's scope; our debug lines quote what a client sent."""
    log = tmp_path / "server.log"
    server = ServerProcess(["--device", "cpu", "--mel-model", str(mel_checkpoint), "--encodec-model", "none",
                            "--log-level", "trace"], log, env={"VOCOS_API_KEYS": ",".join(KEYS)})
    try:
        server.wait_ready()
        auth = {"authorization": f"Bearer {KEYS[0]}"}
        for path in (f"/models?api_key={KEYS[1]}&model={KEYS[1]}", f"/decode/mel?model={KEYS[1]}", f"/{KEYS[1]}"):
            response = httpx.post(f"{server.url}{path}", json=MEL_BODY, headers=auth, timeout=30)
            assert response.status_code in {404, 405}, (path, response.text)
        assert httpx.post(f"{server.url}/decode/mel", json=MEL_BODY, headers=auth, timeout=30).status_code == 200
        offered = [KEY_SUBPROTOCOL_PREFIX + base64.urlsafe_b64encode(k.encode()).decode().rstrip("=") for k in KEYS]
        with connect(server.url.replace("http://", "ws://") + "/stream/mel", subprotocols=["vocos", offered[1]],
                     open_timeout=30) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "start"
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    assert "TRACE" in text and "no model named" in text  # the lines that would carry them were written
    # and uvicorn's access lines, redacted, not lost (its formatter takes the arguments apart)
    assert 'POST /models?api_key=***&model=*** HTTP/1.1" 405' in text and 'POST /*** HTTP/1.1" 40' in text
    assert "Logging error" not in text
    assert "vocos.bearer.***" in text  # the handshake's trace line was written
    for secret in (*KEYS, *offered):
        assert secret.removeprefix(KEY_SUBPROTOCOL_PREFIX) not in text


def test_a_key_is_redacted_percent_encoded_too() -> None:
    """A base64 key reached the access log percent-encoded (a client's query, uvicorn's quoted path)."""
    from service.runtime.logs import redact

    key = "q8Zt+Yf3/w9kLm2=="
    for line in (f"GET /models?client={key}", "GET /models?client=q8Zt%2BYf3%2Fw9kLm2%3D%3D",
                 "GET /q8Zt%2BYf3/w9kLm2%3D%3D HTTP/1.1", "q8Zt%2bYf3%2fw9kLm2%3d%3d", "q8Zt+Yf3%2Fw9kLm2=="):
        assert key[:4] not in redact(line, [key]), line
    assert redact("q8Zt+Yf3/w9kLm2=", [key]) == "q8Zt+Yf3/w9kLm2="  # another string is left alone


def test_redaction_is_linear_in_a_line_of_credential_words_without_values() -> None:
    """Anyone could send 16 KB of "keykey..." as a query (a 401 is logged too): the old pattern backtracked
    quadratically on it, 0.3 s of the event loop per line, twice per access line, which starved the probes.
    The bound is 100 times today's cost and a sixth of the old one."""
    from service.runtime.logs import redact

    for line in ("/healthz?" + "key" * 5400, "/healthz?" + "&key" * 4000, "/x?" + "_token" * 2700 + "=v"):
        started = time.perf_counter()
        redacted = redact(line, ["k3y"])
        assert time.perf_counter() - started < 0.05, line[:40]
    assert redacted.endswith("=***")
