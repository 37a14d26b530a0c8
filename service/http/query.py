"""Query parameters, held to one rule on every endpoint and stream: a name the endpoint does not take is
refused (422 ``invalid_parameter``), as an unknown JSON key is, so that a misspelt option (``sample_rat``)
or one of another endpoint (``bandwidth_id`` on ``/decode/mel``) never changes an answer silently. A
stream's parameters are validated by pydantic as FastAPI validates a request's, so the same mistake
gets the same status, type and message on both transports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import QueryParams

from service.echo import clip
from service.errors import InvalidParameterError

# Output rates a request or stream may ask for (resampled with soxr).
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
# A stream's audio message formats (service.http.websocket.FORMATS maps each to its samples' encoding).
StreamFormat = Literal["pcm16", "f32"]


def known_parameters(request: Request) -> None:
    """A route dependency: refuse query parameters the route does not declare."""
    names = declared_parameters(request)
    if names is None:  # not one of ours (no FastAPI route): nothing to hold it to
        return
    check_names(request.query_params, names, request.url.path)


def declared_parameters(request: Request) -> list[str] | None:
    """The query parameters the request's route declares; None outside a FastAPI route."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    return None if dependant is None else [p.alias for p in dependant.query_params]


def check_names(query: QueryParams, allowed: Iterable[str], path: str) -> None:
    """Raise :class:`InvalidParameterError` naming the first name of ``query`` that ``allowed`` lacks, or
    that it gives twice (one of the values would be taken without a word: which, the client cannot know)."""
    takes = sorted(set(allowed))
    seen: set[str] = set()
    for name, _ in query.multi_items():
        if name not in takes:
            raise InvalidParameterError(
                f"{clip(name, 40)}: unknown query parameter of {path}; it takes {', '.join(takes) or 'none'}"
            )
        if name in seen:
            raise InvalidParameterError(f"{name}: query parameter given more than once; give it once")
        seen.add(name)


class StreamParameters(BaseModel):
    """A WebSocket stream's query (docs/streaming.md); ``lookahead_frames``' range is the model's to check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    format: StreamFormat = "pcm16"
    sample_rate: Annotated[int | None, Field(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)] = None
    bandwidth_id: int | None = None
    bandwidth: float | None = None  # inf and nan are kbps no model has: vocos_core says so, as for HTTP
    lookahead_frames: int | None = None


# What a mel stream does not take: as /decode/mel, which refuses them as unknown parameters.
_ENCODEC_ONLY = frozenset({"bandwidth_id", "bandwidth"})


def stream_parameters(query: QueryParams, path: str) -> StreamParameters:
    """The query of a stream at ``path`` (``/stream/mel`` or ``/stream/encodec``), checked as the HTTP
    endpoint of its kind checks its own: the same names, and an empty value is a value (``?model=`` names
    no model, ``?sample_rate=`` is no number)."""
    allowed = set(StreamParameters.model_fields) - (_ENCODEC_ONLY if path.endswith("/mel") else set())
    check_names(query, allowed, path)
    try:
        return StreamParameters.model_validate(dict(query))
    except ValidationError as exc:
        raise InvalidParameterError(validation_message(exc.errors())) from None


def validation_message(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's errors as one line, ``name: message; ...``, as FastAPI's request validation is answered."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "header", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request parameters"
