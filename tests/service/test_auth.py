"""Bearer-token checks."""

from __future__ import annotations

import pytest

from service.errors import UnauthorizedError
from service.http.auth import BearerAuth


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
