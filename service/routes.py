"""The endpoints: decoding, resynthesis, health probes and metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import torch
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from service.audio_io import AUDIO_TYPES, OutputFormat, choose_format, decode_audio, fit_length
from service.echo import clip
from service.engine import BatchingEngine
from service.errors import InvalidInputError, UnsupportedMediaTypeError, error_body, request_id_of
from service.models import ServedModel
from service.multipart import FORM_DATA, audio_part
from service.payloads import codes_input, media_type, mel_input, merge_choice, resolve_bandwidth_id
from service.request_io import (
    INLINE_BODY_BYTES,
    Deadline,
    audio_response,
    check_duration,
    load_body,
    off_loop,
    read_body,
    read_payload,
    service_state,
    unless_disconnected,
)
from service.settings import Settings
from service.state import ServiceState

router = APIRouter()

FormatQuery = Annotated[
    OutputFormat | None,
    Query(description="wav16 (default: 16-bit PCM WAV), wav32f (float32 WAV) or flac; else from Accept"),
]
BandwidthIdQuery = Annotated[int | None, Query(description="EnCodec bandwidth id: 0..3 = 1.5/3/6/12 kbps")]
BandwidthQuery = Annotated[float | None, Query(description="EnCodec bandwidth in kbps: 1.5, 3, 6 or 12")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed body (JSON, .npy or audio that cannot be parsed)"},
    401: {"description": "Missing or invalid bearer token (when API keys are configured)"},
    404: {"description": "The model of this endpoint is disabled on this server"},
    406: {"description": "No audio type in Accept that the server can produce"},
    408: {"description": "The body did not arrive within VOCOS_BODY_TIMEOUT_S; the connection is closed"},
    413: {"description": "Body or audio duration over the configured limit"},
    415: {"description": "Unsupported Content-Type"},
    422: {"description": "Invalid input: dtype, shape, values, bandwidth"},
    429: {"description": "Queue full; retry after the Retry-After header's seconds"},
    503: {"description": "Draining, or the device out of memory for this request alone (see Retry-After)"},
    504: {"description": "Request deadline (VOCOS_REQUEST_TIMEOUT_S or X-Request-Timeout) passed"},
}
_AUDIO_OUT = {
    "content": {
        "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        "audio/flac": {"schema": {"type": "string", "format": "binary"}},
    },
    "description": "24 kHz mono audio; headers X-Audio-Duration (s), X-Model, X-Request-Id",
}
_RESPONSES: dict[int | str, dict[str, Any]] = {200: _AUDIO_OUT, **_ERRORS}
_RESYNTHESIS_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES,
    503: {
        "description": "Draining; the device out of memory for this request alone; or (audio_path_unavailable) "
        "model=encodec while the EnCodec weights are not on the server (VOCOS_ENCODEC_WEIGHTS): each request "
        "retries loading them. See Retry-After"
    },
}
_GRID = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_NPY = {"schema": {"type": "string", "format": "binary"}}


def _body_doc(json_schema: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": json_schema}, "application/x-npy": _NPY, **(extra or {})}
    return {"requestBody": {"required": True, "content": content}}


_MEL_DOC = _body_doc({"type": "object", "required": ["mel"], "properties": {"mel": _GRID}})
_CODES_DOC = _body_doc(
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
_AUDIO_DOC = {
    "requestBody": {
        "required": True,
        "description": f"The audio file as the body, or {FORM_DATA} with it in the part named 'file' "
        "(or the only file part), as `curl -F file=@speech.wav` and browser forms send it",
        "content": {**{t: _NPY for t in sorted(AUDIO_TYPES)}, FORM_DATA: _FORM},
    }
}


@router.get("/healthz", tags=["health"], summary="Liveness: the process and its batching loops run")
async def healthz(request: Request) -> JSONResponse:
    state = service_state(request)
    if not state.alive:
        body = error_body("unavailable", "a batching loop has stopped", request_id_of(request))
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "alive", "draining": state.draining})


@router.get("/readyz", tags=["health"], summary="Readiness: models loaded and warmed up, not draining")
async def readyz(request: Request) -> JSONResponse:
    state = service_state(request)
    if not state.ready or state.draining:
        body = error_body("not_ready", state.not_ready_reason or "not ready", request_id_of(request))
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "models": {k: m.public_name for k, m in state.models.items()}})


@router.get(
    "/metrics", tags=["health"], summary="Prometheus metrics (text format)", response_class=PlainTextResponse
)
async def metrics(request: Request) -> Response:
    content, content_type = service_state(request).metrics.render()
    return Response(content, media_type=content_type)


@router.post(
    "/decode/mel",
    tags=["decode"],
    summary="Mel spectrogram (n_mels x T float32) to audio",
    responses=_RESPONSES,
    openapi_extra=_MEL_DOC,
    response_class=Response,
)
async def decode_mel(request: Request, format: FormatQuery = None) -> Response:
    state = service_state(request)
    served, engine = state.model("mel")
    deadline = Deadline(request, state.settings)
    fmt = choose_format(format, request.headers.get("accept"))
    body, kind = await read_payload(request, state.settings)
    mel = mel_input(await load_body(state, body, kind, deadline), served.n_features)
    return await _vocode(request, state, served, engine, deadline, fmt, torch.from_numpy(mel))


@router.post(
    "/decode/encodec",
    tags=["decode"],
    summary="EnCodec tokens (K codebooks x T) to audio",
    responses=_RESPONSES,
    openapi_extra=_CODES_DOC,
    response_class=Response,
)
async def decode_encodec(
    request: Request,
    bandwidth_id: BandwidthIdQuery = None,
    bandwidth: BandwidthQuery = None,
    format: FormatQuery = None,
) -> Response:
    """Without bandwidth_id or bandwidth (query or JSON), the bandwidth follows from K (2/4/8/16)."""
    state = service_state(request)
    served, engine = state.model("encodec")
    deadline = Deadline(request, state.settings)
    fmt = choose_format(format, request.headers.get("accept"))
    body, kind = await read_payload(request, state.settings)
    codes, body_id, body_kbps = codes_input(await load_body(state, body, kind, deadline))
    chosen_id = merge_choice("bandwidth_id", bandwidth_id, body_id)
    resolved = resolve_bandwidth_id(
        served.bandwidths,
        served.codebooks,
        num_codebooks=codes.shape[0],
        bandwidth_id=None if chosen_id is None else int(chosen_id),
        bandwidth=merge_choice("bandwidth", bandwidth, body_kbps),
    )
    return await _vocode(request, state, served, engine, deadline, fmt, torch.from_numpy(codes), resolved)


@router.post(
    "/resynthesize",
    tags=["decode"],
    summary="Audio file (WAV/FLAC/OGG/MP3) through the vocoder",
    responses=_RESYNTHESIS_RESPONSES,
    openapi_extra=_AUDIO_DOC,
    response_class=Response,
)
async def resynthesize(
    request: Request,
    model: Literal["mel", "encodec"] = "mel",
    bandwidth_id: BandwidthIdQuery = None,
    bandwidth: BandwidthQuery = None,
    format: FormatQuery = None,
) -> Response:
    """Any sample rate, mixed to mono and resampled to 24 kHz; model=encodec needs a bandwidth.

    The answer lasts exactly as long as the upload: ``round(frames * 24000 / rate)`` samples (halves
    up) for a file of ``frames`` frames at ``rate`` Hz, the vocoder's output padded with zeros or
    trimmed at the end to that length (its frames cover the audio in whole hops).
    """
    state = service_state(request)
    content_type = request.headers.get("content-type")
    form = media_type(content_type) == FORM_DATA
    if not form:
        _check_audio_type(content_type)
    served, engine = state.model(model)
    resolved = _resynthesis_bandwidth(served, bandwidth_id, bandwidth)
    deadline = Deadline(request, state.settings)
    await served.audio_path.require(timeout=deadline.remaining())
    fmt = choose_format(format, request.headers.get("accept"))
    audio = await _read_upload(request, state, served, content_type if form else None)
    worker = state.feature_workers[model]
    features = await unless_disconnected(
        request, worker.run(served.audio_to_features, audio, resolved, timeout=deadline.remaining())
    )
    return await _vocode(request, state, served, engine, deadline, fmt, features, resolved, length=audio.size)


async def _vocode(request: Request, state: ServiceState, served: ServedModel, engine: BatchingEngine,
                  deadline: Deadline, fmt: OutputFormat, features: torch.Tensor,
                  bandwidth_id: int | None = None, length: int | None = None) -> Response:
    """The end every decoding endpoint shares: ``features`` ``(C, T)`` (mel, codes or resynthesis
    features) checked for length, through the batching engine, to the audio response; ``length``, when
    given, is the exact number of samples to answer (``fit_length``)."""
    _check_frames(served, features.shape[-1], state.settings)
    work = engine.submit(
        features, bandwidth_id=bandwidth_id, timeout=deadline.remaining(), request_id=request_id_of(request)
    )
    audio = (await unless_disconnected(request, work)).numpy()
    return await audio_response(state, served, audio if length is None else fit_length(audio, length), fmt)


async def _read_upload(request: Request, state: ServiceState, served: ServedModel,
                       form_type: str | None) -> np.ndarray:
    """The uploaded audio ``(S,)`` at the model's rate: the body, or the file part of a form body whose
    Content-Type is ``form_type``, decoded."""
    body = await read_body(request, state.settings)
    if form_type is not None:
        body, part_type = await off_loop(audio_part, body, form_type, inline=len(body) <= INLINE_BODY_BYTES)
        _check_audio_type(part_type)
    audio = await off_loop(_decode_upload, body, served.sample_rate, state.settings)
    if audio.size < served.min_audio_samples:
        raise InvalidInputError(
            f"the audio is too short: {audio.size} samples at {served.sample_rate} Hz; "
            f"the {served.kind} model needs at least {served.min_audio_samples}"
        )
    return audio


def _decode_upload(body: bytes, sample_rate: int, settings: Settings) -> np.ndarray:
    return decode_audio(body, sample_rate, settings.max_audio_seconds, min_rate=settings.min_sample_rate)


def _check_audio_type(content_type: str | None) -> None:
    """415 unless ``content_type`` (of the body, or of its multipart file part) is absent or an audio type."""
    kind = media_type(content_type)
    if kind and kind not in AUDIO_TYPES:
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Type {clip(kind)}; expected one of {', '.join(sorted(AUDIO_TYPES))}, "
            f"or {FORM_DATA} with the audio file in a part named 'file' (curl -F file=@speech.wav)"
        )


def _resynthesis_bandwidth(
    served: ServedModel, bandwidth_id: int | None, bandwidth: float | None
) -> int | None:
    if not served.bandwidths:
        if bandwidth_id is not None or bandwidth is not None:
            raise InvalidInputError(
                "bandwidth_id / bandwidth apply to model=encodec only; drop them for model=mel"
            )
        return None
    return resolve_bandwidth_id(
        served.bandwidths, served.codebooks, bandwidth_id=bandwidth_id, bandwidth=bandwidth
    )


def _check_frames(served: ServedModel, frames: int, settings: Settings) -> None:
    if frames < served.min_frames:
        raise InvalidInputError(
            f"{frames} frame(s) give no audio with the {served.kind} model; send at least {served.min_frames}"
        )
    check_duration(served.seconds(frames), settings)
