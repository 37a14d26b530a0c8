"""``multipart/form-data`` bodies of ``/resynthesize`` (``curl -F file=@speech.wav``, browser forms): the
audio file part.

Parsed from the bytes ``read_body`` already read, so the body's size limit (413) and time limit (408)
hold as for any body, with python-multipart's parser (the one FastAPI uses), in memory: nothing is
spooled to disk, and the part's bytes are sliced out of the body rather than copied piecewise.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.echo import clip
from service.errors import InvalidInputError, InvalidParameterError, MalformedPayloadError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FORM_DATA = "multipart/form-data"
FILE_FIELD = "file"
# A form holds the file and perhaps a few fields. Each part costs some hundred bytes of bookkeeping, so a
# body of empty parts would cost tens of times its size in memory: more than this many is refused.
MAX_PARTS = 64
_EXAMPLE = "curl -F file=@speech.wav"


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: list[memoryview] = field(default_factory=list)

    def disposition(self, key: bytes) -> str | None:
        value = parse_options_header(self.headers.get(b"content-disposition", b""))[1].get(key)
        return None if value is None else value.decode("latin-1")

    @property
    def content_type(self) -> str | None:
        value = self.headers.get(b"content-type")
        return None if value is None else value.decode("latin-1")


def audio_part(body: bytes, content_type: str, options: Collection[str] = ()) -> tuple[bytes, str | None]:
    """The file part of a ``multipart/form-data`` body and its own Content-Type (None when it has none).

    The part named ``file``, else the only part with a filename. Raises MalformedPayloadError (400)
    when the body is not well-formed multipart, InvalidInputError (422) when no part is the file, and
    InvalidParameterError (422) for a field named as one of the endpoint's query ``options``.
    """
    parts = _parse(body, _boundary(content_type))
    _refuse_options(parts, options)
    part = _choose(parts)
    data = b"".join(part.data)
    if not data:
        raise InvalidInputError(
            f"the file part {clip(part.disposition(b'name') or '', 40)} of the {FORM_DATA} body is empty; "
            "expected an audio file in it"
        )
    return data, part.content_type


def _boundary(content_type: str) -> bytes:
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise MalformedPayloadError(
            f"the Content-Type {FORM_DATA} has no boundary parameter; expected "
            f"'{FORM_DATA}; boundary=...' with the boundary that separates the parts (as {_EXAMPLE} sends)"
        )
    return boundary


def _parse(body: bytes, boundary: bytes) -> list[_Part]:
    parts: list[_Part] = []
    name: list[bytes] = []
    value: list[bytes] = []
    ended: list[bool] = []

    def part_begin() -> None:
        if len(parts) == MAX_PARTS:
            raise MalformedPayloadError(f"the {FORM_DATA} body has more than {MAX_PARTS} parts; expected the "
                                        f"audio file in one part named '{FILE_FIELD}', as {_EXAMPLE} sends")
        parts.append(_Part())

    def header_end() -> None:
        parts[-1].headers[b"".join(name).strip().lower()] = b"".join(value).strip()
        name.clear()
        value.clear()

    callbacks: MultipartCallbacks = {
        "on_part_begin": part_begin,
        "on_header_field": lambda data, start, end: name.append(data[start:end]),
        "on_header_value": lambda data, start, end: value.append(data[start:end]),
        "on_header_end": header_end,
        "on_part_data": lambda data, start, end: parts[-1].data.append(memoryview(data)[start:end]),
        "on_end": lambda: ended.append(True),
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(_without_preamble(body, boundary))
        parser.finalize()
    except FormParserError as exc:
        raise MalformedPayloadError(
            f"malformed {FORM_DATA} body ({exc}); expected parts separated by the Content-Type's boundary, "
            f"as {_EXAMPLE} sends"
        ) from None
    if not ended:  # the parser leaves this check to its caller
        raise MalformedPayloadError(
            f"the {FORM_DATA} body ends before its closing boundary {clip('--' + boundary.decode('latin-1') + '--')} "
            "(truncated, or separated by another boundary than its Content-Type's)"
        )
    return parts


def _refuse_options(parts: list[_Part], options: Collection[str]) -> None:
    """A field named as a query option (``curl -F file=@a.wav -F model=encodec``) was ignored, and the answer
    came from the default model without a word: refused, as an unknown query parameter or JSON key is. So is
    one named nearly so (``-F bandwith=6``, ``-F sampleRate=16000``); other fields, a page form's own, pass."""
    for part in parts:
        name = part.disposition(b"name")
        if name is None or part.disposition(b"filename") is not None:
            continue
        if name in options:
            raise InvalidParameterError(
                f"{clip(name, 40)}: an option sent as a form field; the form carries only the audio file, and "
                f"options go in the query string, as ?{name}=..."
            )
        near = difflib.get_close_matches(name.lower().replace("-", "_"), list(options), n=1, cutoff=0.8)
        if near:
            raise InvalidParameterError(
                f"{clip(name, 40)}: a form field named like the option {near[0]!r}; the form carries only the "
                f"audio file, and options go in the query string, as ?{near[0]}=..."
            )


def _choose(parts: list[_Part]) -> _Part:
    named = [p for p in parts if p.disposition(b"name") == FILE_FIELD]
    candidates = named or [p for p in parts if p.disposition(b"filename") is not None]
    if len(candidates) == 1:
        return candidates[0]
    names = [clip(p.disposition(b"name") or "", 40) for p in parts[:5]]
    shown = f"{', '.join(names)}{' ...' if len(parts) > 5 else ''}" if parts else "none"
    if not candidates:
        raise InvalidInputError(
            f"the {FORM_DATA} body has no file part (parts: {shown}); expected one part named "
            f"'{FILE_FIELD}' holding the audio file, as {_EXAMPLE} sends"
        )
    raise InvalidInputError(
        f"the {FORM_DATA} body has {len(candidates)} file parts (parts: {shown}); expected one, or the audio "
        f"in the part named '{FILE_FIELD}'"
    )


def _without_preamble(body: bytes, boundary: bytes) -> bytes:
    """``body`` from its first boundary line on: what comes before it is a preamble, which RFC 2046 (section
    5.1.1) says to ignore, and which the parser refuses."""
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        return body
    at = body.find(b"\r\n" + delimiter)
    return body if at < 0 else body[at + 2:]
