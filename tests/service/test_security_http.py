"""Security checks of the HTTP layer without a key: what a client that holds none can make the server hold
(the byte budget), and what it can make the server write (response headers, log lines)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np
import pytest
from service_helpers import AppFactory, wait_until
from starlette.datastructures import Headers

from service.http.access import _client_and_target
from service.http.cors import is_preflight
from service.http.json_body import JsonBodyError, load
from service.testing import npy_bytes

KEY = "sec-test-key-5f1e"
BUDGET = 1024 * 1024
AUTHORIZED_NPY = {"authorization": f"Bearer {KEY}", "content-type": "application/x-npy"}
MEL = np.random.default_rng(0).uniform(-4, 0, (100, 12)).astype(np.float32)


def http_scope(path: str, headers: list[tuple[bytes, bytes]], method: str = "GET") -> dict[str, Any]:
    """A scope as uvicorn builds it, for header values its parser would refuse but another server may pass on."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("203.0.113.9", 4711), "server": ("api", 443), "extensions": {}}


async def raw_request(app: Any, scope: dict[str, Any], stall: asyncio.Event | None = None,
                      sent: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run ``scope`` through ``app`` without a body read, and the messages it sent (into ``sent`` as they go);
    with ``stall``, the client takes no byte of the answer's body until ``stall`` is set (one that reads nothing)."""
    sent = [] if sent is None else sent

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the body never comes: nothing here reads it
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if stall is not None and message["type"] == "http.response.body":
            await stall.wait()

    await app(scope, receive, send)
    return sent


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/docs", "/healthz", "/static/redoc.standalone.js"])
async def test_a_body_declared_to_a_public_path_holds_no_budget(make_app: AppFactory, path: str) -> None:
    """A public page never reads a body, but a declared one was reserved in the byte budget until its answer went
    out: clients without a key that declared the body limit and read their answer slowly held the whole budget,
    and every API call was 503."""
    async with make_app(api_keys=KEY, max_body_bytes=BUDGET // 2, max_inflight_bytes=BUDGET) as h:
        stall = asyncio.Event()
        declared = [(b"content-length", str(BUDGET // 2).encode())]
        sent: list[dict[str, Any]] = []
        stalled = [asyncio.ensure_future(raw_request(h.app, http_scope(path, declared), stall, sent))
                   for _ in range(2)]
        try:  # both answers begun, their bodies stalled
            await wait_until(lambda: sum(m["type"] == "http.response.body" for m in sent) == 2)
            assert h.state.inflight.held < BUDGET // 2, h.state.inflight.held
            answer = await h.client.post("/decode/mel", content=npy_bytes(MEL),
                                         headers=AUTHORIZED_NPY)
            assert answer.status_code == 200, answer.text
        finally:
            stall.set()
            await asyncio.gather(*stalled)
        assert h.state.inflight.held == 0


@pytest.mark.asyncio
async def test_an_endpoint_still_reserves_its_declared_body_before_reading_it(make_app: AppFactory) -> None:
    """The fix above keeps the endpoints' early 503: a body that does not fit is refused before it is read."""
    async with make_app(api_keys=KEY, max_body_bytes=BUDGET, max_inflight_bytes=BUDGET) as h:
        h.state.inflight.force_take(BUDGET // 2)
        try:
            answer = await h.client.post("/decode/mel", content=b"\0" * (BUDGET - 10),
                                         headers=AUTHORIZED_NPY)
        finally:
            h.state.inflight.release(BUDGET // 2)
    assert answer.status_code == 503, answer.text


@pytest.mark.asyncio
@pytest.mark.parametrize("value", [b"tts-42\n", b"tts-42\nforged line", b"tts-42\r\n"])
async def test_a_request_id_with_a_final_newline_is_replaced(make_app: AppFactory, value: bytes) -> None:
    """The id's pattern ended in "$", which also matches before a final newline: a server that passes a header's
    newline on (h11 does not) had it echoed into X-Request-Id (response splitting) and into the access line."""
    async with make_app() as h:
        sent = await raw_request(h.app, http_scope("/healthz", [(b"x-request-id", value)]))
    echoed = dict(sent[0]["headers"])[b"x-request-id"]
    assert re.fullmatch(rb"[0-9a-f]{32}", echoed), echoed


@pytest.mark.asyncio
async def test_a_sane_request_id_is_still_kept(make_app: AppFactory) -> None:
    async with make_app() as h:
        sent = await raw_request(h.app, http_scope("/healthz", [(b"x-request-id", b"tts-42:a.b_c")]))
    assert dict(sent[0]["headers"])[b"x-request-id"] == b"tts-42:a.b_c"


def test_a_forwarded_client_cannot_forge_the_start_of_a_text_access_line() -> None:
    """Behind a proxy uvicorn trusts (FORWARDED_ALLOW_IPS="*"), the client's host is what X-Forwarded-For says: a
    host holding spaces and quotes began the line with another request than the one it was."""
    forged = '1.2.3.4 - "DELETE /admin HTTP/1.1" 200 0.001s 0B id=x'
    scope = {"type": "http", "client": (forged, 80), "path": "/healthz", "query_string": b""}
    address, _ = _client_and_target(scope)
    assert address == "1.2.3.4%20-%20%22DELETE%20%2Fadmin%20HTTP%2F1.1%22%20200%200.001s%200B%20id%3Dx:80"
    assert not re.search(r'[\s"]', address)
    long = {"type": "http", "client": ("h" * 10_000, None), "path": "/", "query_string": b""}
    assert len(_client_and_target(long)[0]) < 300


@pytest.mark.parametrize("client", [("10.0.3.7", 51234), ("::1", 8080), ("fe80::1%eth0", 1), ("host-1.example", 2)])
def test_addresses_and_host_names_are_shown_as_they_are(client: tuple[str, int]) -> None:
    scope = {"type": "http", "client": client, "path": "/", "query_string": b""}
    shown = _client_and_target(scope)[0]
    assert shown.removesuffix(f":{client[1]}").replace("%25", "%") == client[0]


def test_a_json_key_with_a_newline_is_quoted_in_its_error() -> None:
    """Every key holding a list is made an array before the keys are checked, and its error named the key as
    sent: a newline in it began a forged line wherever the message is logged as text."""
    with pytest.raises(JsonBodyError) as caught:
        load(b'{"mel\\n2026-12-08 00:00:00,000 INFO service.access: forged": ["x"]}')
    message = str(caught.value)
    assert "\n" not in message and "\\n" in message and message.startswith("'mel")


@pytest.mark.parametrize(("names", "answered"), [
    ((b"origin", b"access-control-request-method"), True),
    ((b"Origin", b"Access-Control-Request-Method"), False),  # not ASGI's lower case: CORSMiddleware passes it on
    ((b"origin",), False),
])
def test_a_preflight_skips_the_key_only_when_cors_middleware_answers_it_itself(names: tuple[bytes, ...],
                                                                               answered: bool) -> None:
    """The middleware lets a preflight through without a key because CORSMiddleware answers it and never passes
    it on; names in another case passed the middleware's test but not CORSMiddleware's, so went on to the routes
    unchecked (a route taking OPTIONS would have answered without a key)."""
    scope = {"type": "http", "method": "OPTIONS", "headers": [(name, b"https://a.example") for name in names]}
    headers = Headers(scope=scope)
    assert ("origin" in headers and "access-control-request-method" in headers) is answered
    assert is_preflight(scope) is answered


@pytest.mark.asyncio
async def test_every_answer_forbids_content_sniffing(make_app: AppFactory) -> None:
    """An error body quotes what the client sent: no browser may take it, or any answer, for another type."""
    async with make_app() as h:
        answers = [await h.client.get("/healthz"), await h.client.get("/nowhere<script>"),
                   await h.client.post("/decode/mel", content=b"<html>", headers={"content-type": "text/html"}),
                   await h.client.post("/decode/mel", content=npy_bytes(np.zeros((100, 9), np.float32)),
                                       headers={"content-type": "application/x-npy"})]
    assert [a.headers.get("x-content-type-options") for a in answers] == ["nosniff"] * 4, answers
