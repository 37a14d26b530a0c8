"""The OpenAPI description of the decoding endpoints' bodies and responses (``service.http.routes``)."""

from __future__ import annotations

from typing import Any

from service.http.multipart import FORM_DATA
from service.runtime.audio_io import AUDIO_TYPES

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed body (JSON, .npy or audio that cannot be parsed)"},
    401: {"description": "Missing or invalid bearer token (when API keys are configured)"},
    404: {"description": "No model of that name (or of this endpoint's kind) on this server; the message lists them"},
    406: {"description": "No audio type in Accept that the server can produce"},
    408: {"description": "The body did not arrive within VOCOS_BODY_TIMEOUT_S; the connection is closed"},
    413: {"description": "Body or audio duration over the configured limit"},
    415: {"description": "Unsupported Content-Type"},
    422: {"description": "Invalid input: dtype, shape, values, bandwidth"},
    429: {"description": "Queue full; retry after the Retry-After header's seconds"},
    503: {"description": "Draining, or the device out of memory for this request alone (see Retry-After)"},
    504: {"description": "Request deadline (VOCOS_REQUEST_TIMEOUT_S or X-Request-Timeout) passed"},
}
AUDIO_OUT = {
    "content": {
        "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        "audio/flac": {"schema": {"type": "string", "format": "binary"}},
    },
    "description": "Mono audio at the model's rate (or sample_rate); headers X-Audio-Duration (s), X-Model, "
    "X-Sample-Rate, X-Request-Id",
}
RESPONSES: dict[int | str, dict[str, Any]] = {200: AUDIO_OUT, **ERRORS}
RESYNTHESIS_RESPONSES: dict[int | str, dict[str, Any]] = {
    **RESPONSES,
    503: {
        "description": "Draining; the device out of memory for this request alone; or (audio_path_unavailable) "
        "model=encodec while the EnCodec weights are not on the server (VOCOS_ENCODEC_WEIGHTS): each request "
        "retries loading them. See Retry-After"
    },
}
# The probes' 503s: a probe that fails is an answer, documented as one.
LIVENESS_RESPONSES: dict[int | str, dict[str, Any]] = {503: {"description": "A batching loop has stopped"}}
READINESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"description": "Not ready: the models are loading or warming up, warm-up failed, or the server drains"},
}
_GRID = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_NPY = {"schema": {"type": "string", "format": "binary"}}


def _body_doc(json_schema: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": json_schema}, "application/x-npy": _NPY, **(extra or {})}
    return {"requestBody": {"required": True, "content": content}}


MEL_DOC = _body_doc({"type": "object", "required": ["mel"], "properties": {"mel": _GRID}})
CODES_DOC = _body_doc(
    {
        "type": "object",
        "required": ["codes"],
        "properties": {"codes": _GRID, "bandwidth_id": {"type": "integer"}, "bandwidth": {"type": "number"}},
    }
)
_FORM = {
    "schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}},
    "encoding": {"file": {"contentType": ", ".join(sorted(AUDIO_TYPES))}},
}
AUDIO_DOC = {
    "requestBody": {
        "required": True,
        "description": f"The audio file as the body, or {FORM_DATA} with it in the part named 'file' "
        "(or the only file part), as `curl -F file=@speech.wav` and browser forms send it",
        "content": {**{t: _NPY for t in sorted(AUDIO_TYPES)}, FORM_DATA: _FORM},
    }
}
