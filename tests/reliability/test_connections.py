"""Connections that hold resources without finishing: slow or idle headers, too many sockets, bodies
held at their last byte, responses never read, uploads abandoned half-way. Real uvicorn, raw sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import time

import numpy as np
import pytest
from reliability_helpers import RawConnection, http_request
from service_helpers import wait_until

from service.http.middleware import DRAIN_BODY_BYTES
from service.http.server import LINGER_S, PROBE_HEADROOM
from service.testing import npy_bytes

pytestmark = pytest.mark.asyncio

NPY = ("content-type", "application/x-npy")


async def test_idle_and_partial_headers_are_closed_at_the_header_timeout(make_live) -> None:
    async with make_live(header_timeout_s=0.5) as server:
        idle = await RawConnection.open(server.port)
        partial = await RawConnection.open(server.port)
        await partial.send(b"POST /decode/mel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        started = time.monotonic()
        assert await idle.closed_by_peer(timeout=5)
        assert await partial.closed_by_peer(timeout=5)
        assert time.monotonic() - started < 2.5
        healthy = await server.client.get("/healthz")
        assert healthy.status_code == 200


async def test_bytes_that_are_no_http_request_get_a_json_400_logged_at_debug(make_live, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    uvicorn_records: list[logging.LogRecord] = []  # uvicorn's loggers do not propagate to caplog's
    catcher = logging.Handler(logging.DEBUG)
    catcher.emit = uvicorn_records.append  # type: ignore[method-assign]
    async with make_live() as server:
        logging.getLogger("uvicorn.error").addHandler(catcher)
        conn = await RawConnection.open(server.port)
        await conn.send(b"POST /decode/mel HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        status, data = await conn.read_response(timeout=5)
        head, _, body = data.partition(b"\r\n\r\n")
        error = json.loads(body)["error"]
        assert status == 400 and error["type"] == "http_error" and "malformed HTTP request" in error["message"]
        assert f"x-request-id: {error['request_id']}".encode() in head.lower()
        assert (await server.client.get("/healthz")).status_code == 200
        logging.getLogger("uvicorn.error").removeHandler(catcher)
    records = caplog.records + uvicorn_records
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]
    assert [r for r in caplog.records if error["request_id"] in r.getMessage() and r.levelno == logging.DEBUG]


async def test_a_request_framed_both_ways_is_refused_and_its_connection_closed(make_live) -> None:
    """Content-Length and chunked Transfer-Encoding together: served with the connection kept, so a request
    smuggled behind it (as a proxy framing by the length would pass it on) was answered too."""
    async with make_live() as server:
        conn = await RawConnection.open(server.port)
        body = b"5\r\nhello\r\n0\r\n\r\n"
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        await conn.send(http_request("POST", "/decode/mel", body, [("transfer-encoding", "chunked"), NPY]) + smuggled)
        status, data = await conn.read_response(timeout=5)  # everything until the server closes
        assert status == 400 and data.count(b"HTTP/1.1 ") == 1, data
        assert b"connection: close" in data.lower() and b"Content-Length and Transfer-Encoding" in data
        conn.close()


async def test_a_body_framed_both_ways_that_is_no_chunked_body_is_answered_not_reset(make_live) -> None:
    """A smuggling client frames its body by the length: h11, reading it as chunked, fails on it and answers
    its own 400. Closed with the rest unread, the connection was reset and the client lost that answer too;
    the close now lingers for it as for a refusal before the body."""
    async with make_live() as server:
        conn = await RawConnection.open(server.port)
        body = b"hello\r\nworld\r\n" + b"\0" * 2_000_000
        sending = asyncio.ensure_future(
            conn.send(http_request("POST", "/decode/mel", body, [("transfer-encoding", "chunked"), NPY])))
        await asyncio.sleep(0.2)  # the client is still writing its body when the answer comes
        status, data = await conn.read_response(timeout=10)
        await asyncio.wait_for(sending, 10)
        assert status == 400 and b"connection: close" in data.lower(), data[:300]
        conn.close()


async def test_a_kept_alive_connection_gets_the_header_timeout_again(make_live) -> None:
    async with make_live(header_timeout_s=0.5) as server:
        conn = await RawConnection.open(server.port)
        await conn.send(http_request("GET", "/healthz"))
        assert await conn.read_status(timeout=5) == 200
        await conn.send(b"GET /healthz HTTP/1.1\r\nHo")  # the next request's headers, never finished
        assert await conn.closed_by_peer(timeout=5)


async def test_a_slow_body_is_not_cut_by_the_header_timeout(make_live) -> None:
    mel = np.zeros((100, 20), np.float32)
    body = npy_bytes(mel)
    async with make_live(header_timeout_s=0.3) as server:
        conn = await RawConnection.open(server.port)
        request = http_request("POST", "/decode/mel", body, [NPY])
        head, rest = request[: -len(body)], request[-len(body) :]
        await conn.send(head)
        await asyncio.sleep(0.6)  # past the header timeout, within the body timeout
        await conn.send(rest)
        assert await conn.read_status(timeout=10) == 200


async def test_beyond_the_cap_only_probes_and_scrapes_are_answered_then_connections_are_refused(make_live) -> None:
    """At VOCOS_MAX_CONNECTIONS a busy server still answers its liveness and readiness probes and the metrics
    scrape (a refused liveness probe would have the pod restarted), and answers everything else 503; past the
    headroom kept for those, connections are refused before their request is read, and counted."""
    async with make_live(max_connections=4) as server:
        held = [await RawConnection.open(server.port) for _ in range(4)]
        for path in ("/healthz", "/readyz", "/metrics"):
            probe = await RawConnection.open(server.port)
            await probe.send(http_request("GET", path))
            assert await probe.read_status(timeout=5) == 200, path
            probe.close()
        decode = await RawConnection.open(server.port)
        await decode.send(http_request("POST", "/decode/mel", npy_bytes(np.zeros((100, 9), np.float32)), [NPY]))
        status, data = await decode.read_response(timeout=5)  # read to the close: Connection: close
        head, _, body = data.partition(b"\r\n\r\n")
        assert status == 503 and b"retry-after: 1" in head.lower()
        assert "VOCOS_MAX_CONNECTIONS" in json.loads(body)["error"]["message"]
        metrics = (await server.client.get("/metrics")).text
        assert 'vocos_requests_total{endpoint="/decode/mel",status="503"} 1.0' in metrics
        assert "vocos_connections_refused_total 0.0" in metrics
        stream = await RawConnection.open(server.port)  # a stream is no probe either
        await stream.send(http_request("GET", "/stream/mel", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")], length=False))
        status, data = await stream.read_response(timeout=5)
        assert status == 503 and b"VOCOS_MAX_CONNECTIONS" in data

        held += [await RawConnection.open(server.port) for _ in range(PROBE_HEADROOM + 1)]
        status, data = await held[-1].read_response(timeout=5)  # refused before anything was sent
        assert status == 503 and b"VOCOS_MAX_CONNECTIONS" in data and b"retry-after: 1" in data.lower()
        # a request id, fresh (the request was never read), in the body and the header as for any answer
        head, _, body = data.partition(b"\r\n\r\n")
        request_id = json.loads(body)["error"]["request_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id) and f"x-request-id: {request_id}".encode() in head.lower()
        for conn in held:
            conn.close()
        await asyncio.sleep(0.2)
        assert (await server.client.get("/healthz")).status_code == 200
        assert server.state.metrics.registry.get_sample_value("vocos_connections_refused_total") >= 1


async def test_bodies_held_at_their_last_byte_stay_within_the_inflight_budget(make_live) -> None:
    """Each connection declares a 3 MiB body and sends all but its last byte: the budget (10 MiB) holds
    three of them; the others are refused at once with 503 and Retry-After, before their bodies."""
    size = 3 * 1024 * 1024
    head = http_request("POST", "/decode/mel", b"", [NPY], length=False).rstrip(b"\r\n")
    head += f"\r\nContent-Length: {size}\r\n\r\n".encode()
    async with make_live(max_inflight_bytes=10 * 1024 * 1024, max_body_bytes=4 * 1024 * 1024) as server:
        budget = server.state.inflight
        holders = []
        for _ in range(3):
            conn = await RawConnection.open(server.port)
            await conn.send(head + b"\0" * (size - 1))
            holders.append(conn)
        await wait_until(lambda: budget.held == 3 * size)
        refused = []
        for _ in range(3):
            conn = await RawConnection.open(server.port)
            await conn.send(head + b"\0" * 1024)
            refused.append(await conn.read_response(timeout=5))
        for status, data in refused:
            assert status == 503 and b"VOCOS_MAX_INFLIGHT_BYTES" in data and b"retry-after" in data.lower()
        assert budget.held == 3 * size
        assert (await server.client.get("/healthz")).status_code == 200
        for conn in holders:
            conn.close()
        await wait_until(lambda: budget.held == 0)


async def test_a_refusal_before_the_body_reaches_a_client_that_sends_its_whole_body_first(make_live) -> None:
    """The budget's 503 goes out before the body is read, and closes the connection: closed with the body
    unread, the socket sent a reset, and a client still sending its body (as HTTP clients do before they
    read) lost the 503 and its Retry-After to ECONNRESET. The rest of the body is now read and dropped
    after the answer (a lingering close), so the client reads the 503, then the end of the connection."""
    size, body_size = 3 * 1024 * 1024, 1_200_000
    async with make_live(max_inflight_bytes=4 * 1024 * 1024, max_body_bytes=3 * 1024 * 1024) as server:
        holder = await RawConnection.open(server.port)  # holds 3 MiB of the 4 MiB budget
        held = http_request("POST", "/decode/mel", b"", [NPY], length=False).rstrip(b"\r\n")
        await holder.send(held + f"\r\nContent-Length: {size}\r\n\r\n".encode() + b"\0")
        await wait_until(lambda: server.state.inflight.held == size)
        for _ in range(3):
            conn = await RawConnection.open(server.port)
            sending = asyncio.ensure_future(conn.send(http_request("POST", "/decode/mel", b"\0" * body_size, [NPY])))
            await asyncio.sleep(0.2)  # the client is still writing its body when the answer comes
            status, data = await conn.read_response(timeout=10)
            await asyncio.wait_for(sending, 10)  # the whole body was taken, not refused with a reset
            assert status == 503 and b"retry-after: 1" in data.lower() and data.endswith(b"}"), data[:300]
            conn.close()
        holder.close()
        await wait_until(lambda: server.state.inflight.held == 0)


async def test_an_early_answer_to_a_long_body_says_connection_close_and_lingers(make_live) -> None:
    """The 413 for a declared 1 GB body said nothing of the connection, which stayed open while uvicorn read and
    dropped the body, until the header timeout (10 s) closed it: a client may have sent its next request on it.
    The answer now says Connection: close, the end of the server's side follows it, and the rest of the body is
    read only for the lingering close: the connection is gone LINGER_S later."""
    async with make_live(max_body_bytes=1024 * 1024) as server:
        conn = await RawConnection.open(server.port)
        head = http_request("POST", "/decode/mel", b"", [NPY], length=False).rstrip(b"\r\n")
        await conn.send(head + b"\r\nContent-Length: 1000000000\r\n\r\n")

        async def keep_sending() -> None:  # 6.5 MB/s: the gigabyte would take minutes
            while True:
                await conn.send(b"\0" * 65536)
                await asyncio.sleep(0.01)

        sending = asyncio.ensure_future(keep_sending())
        status, data = await conn.read_response(timeout=10)  # everything until the end of the server's side
        assert status == 413 and b"connection: close" in data.lower(), data[:300]
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(sending, LINGER_S + 10)
        conn.close()


async def test_an_early_answer_to_a_short_body_keeps_the_connection(make_live) -> None:
    """A body of at most DRAIN_BODY_BYTES declared is dropped after the answer, as before, and the connection
    serves the next request."""
    async with make_live(api_keys="k1") as server:
        conn = await RawConnection.open(server.port)
        body = b"\0" * DRAIN_BODY_BYTES
        await conn.send(http_request("POST", "/decode/mel", body, [NPY]))  # no key: 401 before the body is read
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 401") and b"connection: close" not in head.lower(), head
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await asyncio.wait_for(conn.reader.readexactly(length), 10)
        await conn.send(http_request("GET", "/healthz"))
        assert await conn.read_status(timeout=10) == 200
        conn.close()


async def test_a_response_never_read_is_dropped_at_the_send_timeout(make_live, caplog) -> None:
    """A 20 MB float WAV to a client that never reads: the connection is reset after the send
    timeout, its bytes are released, and the request is recorded as 499 with one INFO line."""
    mel = np.zeros((100, 20_000), np.float32)  # 20000 x 256 samples x 4 bytes
    body = npy_bytes(mel)
    caplog.set_level(logging.INFO, logger="service")
    async with make_live(send_timeout_s=1.0) as server:
        conn = await RawConnection.open(server.port)  # reads nothing: its buffers fill, then the server's
        await conn.send(http_request("POST", "/decode/mel?format=wav32f", body, [NPY]))
        await wait_until(lambda: server.request_count("/decode/mel", 499) == 1, timeout=60)
        assert server.state.inflight.held == 0
        # reset, so the kernel drops the megabytes queued for this client too, and the client learns of it
        assert await conn.reset_by_peer(timeout=5)
        assert server.request_count("/decode/mel", 500) == 0
    lines = [r for r in caplog.records if "VOCOS_SEND_TIMEOUT_S" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and lines[0].exc_info is None


async def test_a_client_that_leaves_a_whole_answer_half_way_is_a_499_not_a_200(make_live, caplog) -> None:
    """A 20 MB float WAV whose client reads its status line, then resets the connection: uvicorn takes the
    pieces sent after that without a word, and the answer counted as sent whole (200, 20 MB in the access
    log). It is a 499, as for a streamed answer, with the bytes actually handed over."""
    body = npy_bytes(np.zeros((100, 20_000), np.float32))  # 20000 x 256 samples x 4 bytes
    caplog.set_level(logging.INFO, logger="service")
    async with make_live() as server:
        conn = await RawConnection.open(server.port)
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await conn.send(http_request("POST", "/decode/mel?format=wav32f", body, [NPY]))
        assert await conn.read_status(timeout=60) == 200
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # a reset: the client is gone
        await wait_until(lambda: server.request_count("/decode/mel", 499) == 1, timeout=30)
        assert server.request_count("/decode/mel", 200) == 0
        assert server.state.inflight.held == 0
    left = [r for r in caplog.records if "the client left before the answer ended" in r.getMessage()]
    assert len(left) == 1 and left[0].levelno == logging.INFO
    sizes = [int(m.group(1)) for r in caplog.records if (m := re.search(r'" 499 \S+ (\d+)B', r.getMessage()))]
    assert sizes and sizes[0] < 20_000_000, sizes


async def test_an_aborted_upload_is_a_499_logged_once_at_info(make_live, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_live() as server:
        for path in ("/decode/mel", "/decode/encodec", "/resynthesize"):
            conn = await RawConnection.open(server.port)
            kind = ("content-type", "audio/wav" if path == "/resynthesize" else "application/x-npy")
            head = http_request("POST", path, b"", [kind], length=False).rstrip(b"\r\n")
            await conn.send(head + b"\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 1024)
            conn.close()
            await wait_until(lambda p=path: server.request_count(p, 499) == 1, timeout=10)
            assert server.request_count(path, 500) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info]
    disconnects = [r for r in caplog.records if "disconnected while sending" in r.getMessage()]
    assert len(disconnects) == 3 and {r.levelno for r in disconnects} == {logging.INFO}
