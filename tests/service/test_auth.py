"""Bearer-token checks: the Authorization header, and the subprotocol a browser's stream offers instead."""

from __future__ import annotations

import base64

import pytest

from service.errors import UnauthorizedError
from service.http.auth import KEY_SUBPROTOCOL_PREFIX, BearerAuth
from service.runtime.logs import redact


def test_no_keys_means_no_authentication() -> None:
    BearerAuth([]).check(None)
    assert not BearerAuth([]).enabled


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Token k1", "bearer k3", "Bearer k1x"])
def test_refused(header: str | None) -> None:
    with pytest.raises(UnauthorizedError):
        BearerAuth(["k1", "k2"]).check(header)


@pytest.mark.parametrize("header", ["Bearer k1", "bearer k2", "  Bearer   k2  "])
def test_accepted(header: str) -> None:
    BearerAuth(["k1", "k2"]).check(header)


def subprotocol(key: str) -> str:
    """A key as a browser's page offers it: ``btoa(key)`` made base64url, its padding dropped."""
    return KEY_SUBPROTOCOL_PREFIX + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


@pytest.mark.parametrize("key", ["k1", "k2-longer:key.with~marks!"])
def test_a_stream_takes_the_key_a_browser_offers_as_a_subprotocol(key: str) -> None:
    BearerAuth(["k1", "k2-longer:key.with~marks!"]).check_stream(None, ["vocos", subprotocol(key)])


@pytest.mark.parametrize(("authorization", "offered"), [
    (None, ["vocos", subprotocol("k3")]),  # a wrong key
    (None, ["vocos", KEY_SUBPROTOCOL_PREFIX + "k1"]),  # not encoded: "k1" decodes to other bytes
    ("Bearer nope", ["vocos", subprotocol("k1")]),  # the header, when sent, is the one checked
])
def test_a_stream_with_a_wrong_key_is_refused(authorization: str | None, offered: list[str]) -> None:
    with pytest.raises(UnauthorizedError, match=r"invalid API key|base64url"):
        BearerAuth(["k1"]).check_stream(authorization, offered)


def test_refusals_of_a_streams_subprotocol_key_say_what_was_expected() -> None:
    auth = BearerAuth(["k1"])
    with pytest.raises(UnauthorizedError, match=r"offer the subprotocols 'vocos' and 'vocos\.bearer\.<the key"):
        auth.check_stream(None, ["vocos"])
    with pytest.raises(UnauthorizedError, match="expected one key"):
        auth.check_stream(None, [subprotocol("k1"), subprotocol("k2")])
    for encoded in ("%%", "", "gA", "a2+x"):  # not base64url; nothing; a byte beyond ASCII; standard base64
        with pytest.raises(UnauthorizedError, match="expected the API key encoded as base64url"):
            auth.check_stream(None, [KEY_SUBPROTOCOL_PREFIX + encoded])
    BearerAuth([]).check_stream(None, [KEY_SUBPROTOCOL_PREFIX + "%%"])  # no keys: nothing is checked


def test_the_logs_hide_a_key_offered_as_a_subprotocol_right_or_wrong() -> None:
    line = f"(b'sec-websocket-protocol', b'vocos, {subprotocol('k1')}, x'), {KEY_SUBPROTOCOL_PREFIX}d3Jvbmc"
    assert redact(line) == "(b'sec-websocket-protocol', b'vocos, vocos.bearer.***, x'), vocos.bearer.***"
