"""The OpenAPI description of the decoding endpoints' bodies and responses (``service.http.routes``)."""

from __future__ import annotations

from typing import Any

from service.http.multipart import FORM_DATA
from service.runtime.audio_io import AUDIO_TYPES

# Every error answer's body (service.http.errors.error_body).
ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["type", "message", "request_id"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                                   "request_id": {"type": "string"}},
                }
            },
        }
    }
}
_STRING = {"schema": {"type": "string"}}
_REQUEST_ID = {"X-Request-Id": {"description": "The request's id (the client's X-Request-Id when sane)", **_STRING}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error answer: its description, the JSON error body, and its headers."""
    return {"description": description, "content": ERROR_BODY, "headers": {**_REQUEST_ID, **(headers or {})}}


UNAUTHORIZED = error("Missing or invalid bearer token (when API keys are configured)",
                     {"WWW-Authenticate": {"description": "Bearer", **_STRING}})
ERRORS: dict[int | str, dict[str, Any]] = {
    400: error("Malformed body (JSON, .npy or audio that cannot be parsed), or a request framed both by "
               "Content-Length and Transfer-Encoding (then the connection is closed)"),
    401: UNAUTHORIZED,
    404: error("No model of that name (or of this endpoint's kind) on this server; the message lists them"),
    406: error("No audio type in Accept that the server can produce"),
    408: error("The body did not arrive within VOCOS_BODY_TIMEOUT_S; the connection is closed"),
    413: error("Body or audio duration over the configured limit"),
    415: error("Unsupported Content-Type"),
    422: error("Invalid input (invalid_input: dtype, shape, values, bandwidth) or query (invalid_parameter: an "
               "unknown parameter, a value of the wrong type)"),
    429: error("Queue full; retry after the Retry-After header's seconds", _RETRY_AFTER),
    503: error("Draining; the device out of memory for this request alone; too many streams open "
               "(too_many_streams, for stream=true); the bytes of bodies in flight or the connections at their "
               "limit (VOCOS_MAX_INFLIGHT_BYTES, VOCOS_MAX_CONNECTIONS). See Retry-After", _RETRY_AFTER),
    504: error("Request deadline (VOCOS_REQUEST_TIMEOUT_S or X-Request-Timeout) passed"),
}
AUDIO_OUT = {
    "content": {
        "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        "audio/flac": {"schema": {"type": "string", "format": "binary"}},
    },
    "description": "Mono audio at the model's rate (or sample_rate)",
    "headers": {
        "X-Audio-Duration": {"description": "Seconds of audio", "schema": {"type": "number"}},
        "X-Sample-Rate": {"description": "The audio's sample rate (Hz)", "schema": {"type": "integer"}},
        "X-Model": {"description": "The model that made it", **_STRING},
        "X-Model-Source": {"description": "Where that model was loaded from", **_STRING},
        "X-Input-Warning": {"description": "Set when the input looks like another front-end's", **_STRING},
        **_REQUEST_ID,
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = {200: AUDIO_OUT, **ERRORS}
RESYNTHESIS_RESPONSES: dict[int | str, dict[str, Any]] = {
    **RESPONSES,
    503: error(
        "Draining; the device out of memory for this request alone; too many streams open (too_many_streams, for "
        "stream=true); the bytes of bodies in flight or the connections at their limit; or "
        "(audio_path_unavailable) model=encodec while the EnCodec weights are not on the server "
        "(VOCOS_ENCODEC_WEIGHTS): each request retries loading them. See Retry-After", _RETRY_AFTER),
}


def _json_answer(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    """A 200 JSON answer and its schema: FastAPI documents an untyped route's answer as ``{}``, which tells a
    client generator (Go, TypeScript) nothing."""
    schema = {"type": "object", "required": list(properties), "properties": properties}
    return {"description": description, "content": {"application/json": {"schema": schema}}, "headers": _REQUEST_ID}


_NULLABLE_STRING = {"type": ["string", "null"]}
# One entry of GET /models (service.runtime.models.ServedModel.describe; docs/models.md).
_MODEL = {
    "type": "object",
    "required": ["name", "kind", "sample_rate", "hop_length", "n_fft", "n_features", "front_end", "dtype", "device",
                 "cpu_matmul", "parameters", "source", "revision", "lookahead_frames", "lookahead_ms"],
    "properties": {
        "name": {"type": "string"}, "kind": {"type": "string", "description": "mel or encodec"},
        "sample_rate": {"type": "integer"}, "hop_length": {"type": "integer"}, "n_fft": {"type": ["integer", "null"]},
        "n_features": {"type": "integer"},
        "front_end": {"type": "object", "description": "the mel settings, or the EnCodec bandwidths (docs/models.md)"},
        "dtype": {"type": "string"}, "device": {"type": "string"}, "cpu_matmul": _NULLABLE_STRING,
        "parameters": {"type": "integer"},
        "source": {"type": "string", "description": "the Hub id (@revision), or local:<directory name>"},
        "revision": _NULLABLE_STRING, "lookahead_frames": {"type": "integer"}, "lookahead_ms": {"type": "number"},
    },
}
# The probes' 503s: a probe that fails is an answer, documented as one.
LIVENESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _json_answer("Alive", {"status": {"type": "string", "enum": ["alive"]}, "draining": {"type": "boolean"}}),
    503: error("A batching loop has stopped"),
}
MODELS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _json_answer("The served models, in the order each endpoint picks its default from",
                      {"models": {"type": "array", "items": _MODEL}}),
    404: error("No model of the ?model= name on this server; the message lists them"),
}
READINESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _json_answer("Ready", {"status": {"type": "string", "enum": ["ready"]}, "models": {
        "type": "object", "additionalProperties": {"type": "string"},
        "description": "each served model's name and its source"}}),
    503: error("Not ready: the models are warming up, warm-up failed, or the server drains"),
}
# Request headers every decoding endpoint reads.
_HEADERS = [
    {"name": "X-Request-Timeout", "in": "header", "required": False, "schema": {"type": "number"},
     "description": "Seconds this request may take, below VOCOS_REQUEST_TIMEOUT_S (then 504)"},
    {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "An id for the request, echoed in the answer and the server's log lines"},
]
_GRID = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_NPY = {"schema": {"type": "string", "format": "binary"}}


def _body_doc(json_schema: dict[str, Any], what: str, example: dict[str, Any]) -> dict[str, Any]:
    """``example``: a body the default model decodes, what /docs' "Try it out" sends as it is (one generated
    from the schema, ``{"mel": [[0]]}``, was refused with 422)."""
    content = {"application/json": {"schema": json_schema, "example": example}, "application/x-npy": _NPY,
               "application/npy": _NPY, "application/octet-stream": _NPY}
    return {"parameters": _HEADERS, "requestBody": {"required": True, "content": content, "description": what}}


MEL_DOC = _body_doc({"type": "object", "required": ["mel"], "properties": {"mel": _GRID},
                     "additionalProperties": False},
                    "The mel, (n_mels, T) or (1, n_mels, T), as JSON or as a .npy file (octet-stream: sniffed)",
                    # 100 bands (the official mel model's) by 4 frames of a log-mel falling with frequency, as
                    # speech's does: a constant one is answered with a warning that it looks like silence
                    {"mel": [[round(-1.5 - 0.08 * band + 0.06 * ((7 * band + 3 * t) % 5), 2) for t in range(4)]
                             for band in range(100)]})
CODES_DOC = _body_doc(
    {
        "type": "object",
        "required": ["codes"],
        "properties": {"codes": _GRID, "bandwidth_id": {"type": ["integer", "null"]},
                       "bandwidth": {"type": ["number", "null"]}},
        "additionalProperties": False,
    },
    "The codes, (K, T) integers (or one item, (K, 1, T) or (1, K, T) as EnCodec's encode gives), as JSON "
    "or as a .npy file (octet-stream: sniffed)",
    {"codes": [[0, 1, 2, 3], [4, 5, 6, 7]], "bandwidth_id": 0},  # 2 codebooks: 1.5 kbps
)
_FORM = {
    "schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}},
    "encoding": {"file": {"contentType": ", ".join(sorted(AUDIO_TYPES))}},
}
AUDIO_DOC = {
    "parameters": _HEADERS,
    "requestBody": {
        "required": True,
        "description": f"The audio file as the body, or {FORM_DATA} with it in the part named 'file' "
        "(or the only file part), as `curl -F file=@speech.wav` and browser forms send it",
        "content": {**{t: _NPY for t in sorted(AUDIO_TYPES)}, FORM_DATA: _FORM},
    }
}
