"""Bearer-token authentication against the configured API keys."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from service.errors import UnauthorizedError


class BearerAuth:
    """Checks ``Authorization: Bearer <key>`` headers; with no keys configured everything passes."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise UnauthorizedError unless ``authorization`` carries one of the keys."""
        if not self._keys:
            return
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("missing bearer token; send 'Authorization: Bearer <API key>'")
        presented = token.strip().encode()
        # Compare against every key, without stopping early, so timing does not reveal which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise UnauthorizedError("invalid API key")
