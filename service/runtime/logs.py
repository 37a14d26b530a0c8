"""The process's logging: one handler, on the root logger, through which every record passes once;
and secrets kept out of it: query parameters that carry credentials, and the configured API keys.

uvicorn's access log writes every request's path with its query string, so a client that sends its
key as ``?api_key=...`` (a habit from other APIs; this service reads keys only from the
Authorization header) would have it written verbatim.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

REDACTED = "***"
# Query parameters whose values are credentials, whatever the API that named them.
_SECRET_PARAM = re.compile(
    r"(?i)([?&](?:[\w.-]*(?:key|token|secret|password|passwd|auth|signature|credential)[\w.-]*)=)[^&#\s\"]*"
)


def configure_logging(level: str) -> None:
    """Log at ``level`` (a Settings log level; ``trace`` is DEBUG) to stderr, each record once."""
    name = "DEBUG" if level == "trace" else level.upper()
    logging.basicConfig(level=name, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # huggingface_hub attaches a bare StreamHandler to its logger when imported, and its records also
    # propagate to the root: each would print twice. Imported here so that its handler exists to remove.
    import huggingface_hub  # noqa: F401

    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        hub.removeHandler(handler)
    # The multipart parser warns about each malformed upload; the server answers those 400 and logs a
    # caller's mistakes at DEBUG, so its warnings are shown at debug level only.
    logging.getLogger("python_multipart").setLevel(logging.DEBUG if name == "DEBUG" else logging.ERROR)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with credential-named query values and every string of ``secrets`` replaced by ``***``."""
    text = _SECRET_PARAM.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Redacts a record's message arguments (uvicorn's access log passes the path as one of them)."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a, self.secrets) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = redact(record.msg, self.secrets)
        return True
