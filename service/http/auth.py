"""Bearer-token authentication against the configured API keys."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence

from service.errors import UnauthorizedError

# A browser's WebSocket cannot send an Authorization header, only subprotocols (Sec-WebSocket-Protocol), so a
# page sends its key as one: new WebSocket(url, ["vocos", "vocos.bearer." + base64url(key)]). The key is
# base64url without padding because a subprotocol must be an HTTP token; Kubernetes streams carry bearer
# tokens the same way. The server selects "vocos": a browser fails a handshake whose answer names none of
# the subprotocols it offered, and an answer naming the key's would echo the key.
STREAM_SUBPROTOCOL = "vocos"
KEY_SUBPROTOCOL_PREFIX = "vocos.bearer."
_MISSING = "missing bearer token; send 'Authorization: Bearer <API key>'"
_MISSING_ON_STREAM = (f"{_MISSING} (a browser, which cannot: offer the subprotocols '{STREAM_SUBPROTOCOL}' and "
                      f"'{KEY_SUBPROTOCOL_PREFIX}<the key in base64url, unpadded>')")


class BearerAuth:
    """Checks ``Authorization: Bearer <key>`` headers, and on a stream's handshake the key a browser offers as a
    subprotocol instead (:meth:`check_stream`); with no keys configured everything passes."""

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
            raise UnauthorizedError(_MISSING)
        presented = token.strip().encode()
        # Compare against every key, without stopping early, so timing does not reveal which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise UnauthorizedError("invalid API key")

    def check_stream(self, authorization: str | None, subprotocols: Sequence[str]) -> None:
        """:meth:`check` for a stream's handshake: the ``Authorization`` header when sent, else the key a
        browser offers as the subprotocol ``vocos.bearer.<base64url key>``."""
        if not self._keys:
            return
        if authorization is None:
            key = key_of_subprotocols(subprotocols)
            if key is None:
                raise UnauthorizedError(_MISSING_ON_STREAM)
            authorization = f"Bearer {key}"
        self.check(authorization)


def key_of_subprotocols(subprotocols: Sequence[str]) -> str | None:
    """The API key a handshake offers as the subprotocol ``vocos.bearer.<base64url key>``; None when none does."""
    offered = [p for p in subprotocols if p.startswith(KEY_SUBPROTOCOL_PREFIX)]
    if not offered:
        return None
    if len(offered) > 1:
        raise UnauthorizedError(f"{len(offered)} '{KEY_SUBPROTOCOL_PREFIX}' subprotocols offered; expected one key")
    encoded = offered[0][len(KEY_SUBPROTOCOL_PREFIX):]
    try:
        # validate=True alone would take "+" and "/" too: standard base64, which a subprotocol cannot carry ("/").
        if "+" in encoded or "/" in encoded:
            raise ValueError(encoded)
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True).decode("ascii")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        key = ""
    if not key:
        raise UnauthorizedError(f"the '{KEY_SUBPROTOCOL_PREFIX}' subprotocol does not hold a key in base64url; "
                                "expected the API key encoded as base64url, without padding")
    return key
