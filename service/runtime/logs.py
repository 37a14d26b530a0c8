"""The process's logging: one handler, on the root logger, through which every record passes once;
and secrets kept out of it: query parameters that carry credentials, and the configured API keys.

The access log (``service.http.access``) writes every request's path with its query string, so a
client that sends its key as ``?api_key=...`` (a habit from other APIs; this service reads keys only
from the Authorization header) would have it written verbatim.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

REDACTED = "***"
# A query parameter (its name, then its value), and the names whose values are credentials, whatever the
# API that named them. Two patterns, each linear: a single one with the words inside the name's repeat
# backtracked quadratically on a long run of them without "=" (300 ms per 16 KB line, for anyone).
_QUERY_PARAM = re.compile(r"([?&])([^?&=#\s\"]*)=[^&#\s\"]*")
_SECRET_NAME = re.compile(r"(?i)key|token|secret|password|passwd|auth|signature|credential")
# A key a browser offers as a stream's subprotocol (service.http.auth.KEY_SUBPROTOCOL_PREFIX), encoded, so not
# one of the configured strings; a wrong key is hidden too, as it may be a near miss of a right one.
_KEY_SUBPROTOCOL = re.compile(r"(?i)(vocos\.bearer\.)[^,\s'\"]*")
# The most characters of one argument of a record: uvicorn's line for a refused handshake wrote a client's 60 KB
# query whole, for anyone; the service's own lines quote what a client sent clipped (service.echo).
MAX_ARGUMENT_CHARS = 4096


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_json_lines = False  # the format configure_logging set: the process's logging is one, as its stderr is
_configured_secrets: tuple[str, ...] = ()  # the keys redact_logs was last given, for redact_configured


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log at ``level`` (a Settings log level; ``trace`` is DEBUG) to stderr, each record once, as ``fmt``:
    ``text`` lines or ``json`` objects (:class:`JsonFormatter`), uvicorn's records included."""
    name = "DEBUG" if level == "trace" else level.upper()
    stderr = logging.StreamHandler()
    stderr.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=name, handlers=[stderr])
    logging.captureWarnings(True)  # a library's warnings.warn is a record too, in the format, not a bare line
    global _json_lines
    _json_lines = fmt == "json"
    # huggingface_hub attaches a bare StreamHandler to its logger when imported, and its records also
    # propagate to the root: each would print twice. Imported here so that its handler exists to remove.
    import huggingface_hub  # noqa: F401

    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        hub.removeHandler(handler)
    # The multipart parser warns about each malformed upload; the server answers those 400 and logs a
    # caller's mistakes at DEBUG, so its warnings are shown at debug level only.
    logging.getLogger("python_multipart").setLevel(logging.DEBUG if name == "DEBUG" else logging.ERROR)


def stopping(message: str) -> None:
    """The one line that says why the server stops (after :func:`configure_logging`): ``vocos-serve: message``
    alone as text, for a person; a CRITICAL record as JSON, for a collector."""
    if _json_lines:
        logging.getLogger("service").critical(message)
    else:
        print(f"vocos-serve: {message}", file=sys.stderr)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with credential-named query values, a stream's key subprotocol and every string of ``secrets``
    replaced by ``***``."""
    text = _QUERY_PARAM.sub(_redact_param, text)
    text = _KEY_SUBPROTOCOL.sub(rf"\g<1>{REDACTED}", text)
    pattern = _secrets_pattern(tuple(s for s in secrets if s))
    return pattern.sub(REDACTED, text) if pattern is not None else text


def redact_configured(text: str) -> str:
    """:func:`redact` with the keys :func:`redact_logs` was last given: for a caller that must cut a text it
    logs, and so must redact it before the cut (the handlers' redaction would miss a key cut in two)."""
    return redact(text, _configured_secrets)


def _redact_param(match: re.Match[str]) -> str:
    separator, name = match.groups()
    return f"{separator}{name}={REDACTED}" if _SECRET_NAME.search(name) else match.group(0)


@functools.lru_cache(maxsize=8)
def _secrets_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """Each secret as sent, or with any of its characters percent-encoded (in either case), as a client puts
    it in a URL and uvicorn's access log quotes a path: a base64 key has ``+``, ``/`` and ``=`` to encode.
    Keys are visible ASCII (Settings), one byte each."""
    if not secrets:
        return None

    def char(c: str) -> str:
        code = f"{ord(c):02X}"
        return f"(?:{re.escape(c)}|%{code[0]}[{code[1]}{code[1].lower()}])"

    return re.compile("|".join("".join(char(c) for c in s) for s in sorted(set(secrets), key=len, reverse=True)))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, the record's ``fields`` (an access line's request id, status...), ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RedactSecrets(logging.Filter):
    """Redacts what a record prints, whatever its arguments hold (uvicorn's trace lines print a request's
    scope, ours an exception naming what a client sent), and its traceback. Arguments keep their places:
    a formatter may take them apart (uvicorn's access formatter reads five). A record's ``fields`` (which
    :class:`JsonFormatter` writes) are redacted as arguments are."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._argument(a) for a in record.args)
        elif isinstance(record.args, Mapping):  # log.info("%(key)s", {...}): logging's other form of arguments
            record.args = {k: self._argument(v) for k, v in record.args.items()}
        elif isinstance(record.msg, str) and not record.args:
            record.msg = redact(record.msg, self.secrets)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: self._argument(v) for k, v in fields.items()}
        if record.exc_info and not record.exc_text:  # formatters print this cached text when it is set
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
        return True

    def _argument(self, value: object) -> object:
        if isinstance(value, str):
            return _clip(redact(value, self.secrets))
        if isinstance(value, (int, float)):  # printed by %d: left as it is (and no key is only digits of one)
            return value
        text = str(value)
        redacted = _clip(redact(text, self.secrets))
        return value if redacted == text else redacted  # printed as %s or %r: the redacted text stands in


def _clip(text: str) -> str:
    """``text`` cut to :data:`MAX_ARGUMENT_CHARS` with a final ``…`` (after its redaction: a key cut in two would
    no longer be recognised)."""
    return text if len(text) <= MAX_ARGUMENT_CHARS else text[:MAX_ARGUMENT_CHARS] + "…"


# The loggers whose handlers print the service's records and uvicorn's (which do not reach the root's).
_PRINTING_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def redact_logs(secrets: Sequence[str]) -> None:
    """A :class:`RedactSecrets` of ``secrets`` on every handler that prints the service's or uvicorn's
    records, at every level (a filter on a logger would miss the records of its children)."""
    global _configured_secrets
    _configured_secrets = tuple(s for s in secrets if s)
    for name in _PRINTING_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            for stale in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
                handler.removeFilter(stale)
            handler.addFilter(RedactSecrets(secrets))
