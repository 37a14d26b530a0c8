"""The endpoints: parse the wire format, call the serving layer (``service.runtime.serving``), encode the answer;
and the health probes, metrics and model list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from service.echo import clip
from service.errors import UnsupportedMediaTypeError
from service.http.errors import error_body, request_id_of
from service.http.multipart import FORM_DATA, audio_part
from service.http.payloads import codes_grid, media_type, mel_grid, merge_choice
from service.http.query import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, declared_parameters, known_parameters
from service.http.request_io import (
    INLINE_BODY_BYTES,
    Deadline,
    audio_response,
    load_body,
    off_loop,
    read_body,
    read_payload,
    service_state,
    unless_disconnected,
)
from service.http.route_docs import (
    AUDIO_DOC,
    CODES_DOC,
    LIVENESS_RESPONSES,
    MEL_DOC,
    MODELS_RESPONSES,
    READINESS_RESPONSES,
    RESPONSES,
    RESYNTHESIS_RESPONSES,
)
from service.http.state import ServiceState
from service.http.streamed import check_streamable, streamed_response
from service.runtime.audio_io import AUDIO_TYPES, OutputFormat, check_encodable, choose_format
from service.runtime.serving import Vocoder

router = APIRouter()

ModelQuery = Annotated[str | None, Query(description="a served model's name (GET /models); default: the "
                                         "first of the endpoint's kind")]
ListedModelQuery = Annotated[str | None, Query(description="a served model's name: list that one alone")]
FormatQuery = Annotated[
    OutputFormat | None,
    Query(description="wav16 (default: 16-bit PCM WAV), wav32f (float32 WAV) or flac; else from Accept"),
]
SampleRateQuery = Annotated[int | None, Query(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE, description="resample the "
                                              "answer to this rate in Hz (soxr), e.g. 8000/16000 for telephony, "
                                              "44100/48000")]
BandwidthIdQuery = Annotated[int | None, Query(description="EnCodec bandwidth id: 0..3 = 1.5/3/6/12 kbps")]
BandwidthQuery = Annotated[float | None, Query(description="EnCodec bandwidth in kbps: 1.5, 3, 6 or 12")]
StreamQuery = Annotated[bool, Query(description="send the WAV as it is computed (chunked transfer; its header "
                                    "carries the final length): the first bytes of a long decode leave early")]


# HEAD too (out of the API docs, where it would repeat GET): HTTP asks for HEAD wherever GET is served,
# and load balancers' health checks use it.
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", tags=["health"], summary="Liveness: the process and its batching loops run",
            responses=LIVENESS_RESPONSES)
async def healthz(request: Request) -> JSONResponse:
    state = service_state(request)
    if not state.alive:
        body = error_body("unavailable", "a batching loop has stopped", request_id_of(request))
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "alive", "draining": state.draining})


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", tags=["health"], summary="Readiness: models loaded and warmed up, not draining",
            responses=READINESS_RESPONSES)
async def readyz(request: Request) -> JSONResponse:
    state = service_state(request)
    if not state.serving:
        # A replica whose batching loop died answers every request 503: out of the load balancer too, until
        # its liveness probe has it restarted.
        reason = state.not_ready_reason or ("not ready" if state.alive else "a batching loop has stopped")
        body = error_body("not_ready", reason, request_id_of(request))
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "models": {k: m.public_name for k, m in state.models.items()}})


@router.head("/metrics", include_in_schema=False)
@router.get(
    "/metrics", tags=["health"], summary="Prometheus metrics (text format)", response_class=PlainTextResponse
)
async def metrics(request: Request) -> Response:
    content, content_type = service_state(request).metrics.render()
    return Response(content, media_type=content_type)


@router.head("/models", dependencies=[Depends(known_parameters)], include_in_schema=False)
@router.get("/models", dependencies=[Depends(known_parameters)], tags=["models"],
            summary="The served models and their front-ends", responses=MODELS_RESPONSES)
async def models(request: Request, model: ListedModelQuery = None) -> JSONResponse:
    """What a client needs to check that its acoustic model's features match: each model's rate, hop,
    front-end (mel settings, or EnCodec bandwidths), dtype, device and source; no server paths."""
    state = service_state(request)
    listed = state.models.values() if model is None else [state.served(model)]
    return JSONResponse({"models": [served.describe() for served in listed]})


@router.post(
    "/decode/mel",
    dependencies=[Depends(known_parameters)],
    tags=["decode"],
    summary="Mel spectrogram (n_mels x T float32) to audio",
    responses=RESPONSES,
    openapi_extra=MEL_DOC,
    response_class=Response,
)
async def decode_mel(request: Request, model: ModelQuery = None, format: FormatQuery = None,
                     sample_rate: SampleRateQuery = None, stream: StreamQuery = False) -> Response:
    """Without ``model``, the first mel model served."""
    state, vocoder = _serving(request)
    slot = vocoder.model(model, "mel")
    deadline = Deadline(request, state.settings)
    fmt = _format(request, format, stream, sample_rate or slot.served.sample_rate)
    body, kind = await read_payload(request, state.settings)
    mel = mel_grid(await load_body(state, body, kind, deadline))
    options: dict[str, Any] = {"deadline": deadline.at, "request_id": request_id_of(request),
                               "sample_rate": sample_rate}
    if stream:
        return streamed_response(await vocoder.stream_mel(slot, mel, **options), fmt, options["request_id"])
    work = vocoder.decode_mel(slot, mel, request_bytes=len(body), encode=fmt, **options)
    return audio_response(await unless_disconnected(request, work), fmt)


@router.post(
    "/decode/encodec",
    dependencies=[Depends(known_parameters)],
    tags=["decode"],
    summary="EnCodec tokens (K codebooks x T) to audio",
    responses=RESPONSES,
    openapi_extra=CODES_DOC,
    response_class=Response,
)
async def decode_encodec(request: Request, model: ModelQuery = None, bandwidth_id: BandwidthIdQuery = None,
                         bandwidth: BandwidthQuery = None, format: FormatQuery = None,
                         sample_rate: SampleRateQuery = None, stream: StreamQuery = False) -> Response:
    """Without bandwidth_id or bandwidth (query or JSON), the bandwidth follows from K (2/4/8/16);
    without ``model``, the first EnCodec model served."""
    state, vocoder = _serving(request)
    slot = vocoder.model(model, "encodec")
    deadline = Deadline(request, state.settings)
    fmt = _format(request, format, stream, sample_rate or slot.served.sample_rate)
    body, kind = await read_payload(request, state.settings)
    codes, body_id, body_kbps = codes_grid(await load_body(state, body, kind, deadline))
    chosen_id = merge_choice("bandwidth_id", bandwidth_id, body_id)
    options: dict[str, Any] = {"bandwidth_id": None if chosen_id is None else int(chosen_id),
               "bandwidth": merge_choice("bandwidth", bandwidth, body_kbps), "deadline": deadline.at,
               "request_id": request_id_of(request), "sample_rate": sample_rate}
    if stream:
        return streamed_response(await vocoder.stream_codes(slot, codes, **options), fmt, options["request_id"])
    work = vocoder.decode_codes(slot, codes, request_bytes=len(body), encode=fmt, **options)
    return audio_response(await unless_disconnected(request, work), fmt)


@router.post(
    "/resynthesize",
    dependencies=[Depends(known_parameters)],
    tags=["decode"],
    summary="Audio file (WAV/FLAC/OGG/MP3) through the vocoder",
    responses=RESYNTHESIS_RESPONSES,
    openapi_extra=AUDIO_DOC,
    response_class=Response,
)
async def resynthesize(request: Request, model: ModelQuery = None, bandwidth_id: BandwidthIdQuery = None,
                       bandwidth: BandwidthQuery = None, format: FormatQuery = None,
                       sample_rate: SampleRateQuery = None, stream: StreamQuery = False) -> Response:
    """Any sample rate, mixed to mono, through any served model (default: the first mel model;
    ``model=encodec`` needs a bandwidth). The answer lasts exactly as long as the upload:
    ``round(frames * rate_out / rate_in)`` samples for a file of ``frames`` frames at ``rate_in`` Hz."""
    state, vocoder = _serving(request)
    content_type = request.headers.get("content-type")
    form = media_type(content_type) == FORM_DATA
    if not form:
        _check_audio_type(content_type)
    slot = vocoder.model(model, "mel" if model is None else None, hint=RESYNTHESIS_MODEL_HINT)
    deadline = Deadline(request, state.settings)
    fmt = _format(request, format, stream, sample_rate or slot.served.sample_rate)
    # A WAV of the longest audio taken (MAX_AUDIO_SECONDS) at 44.1 kHz stereo passes MAX_BODY_BYTES; FLAC fits.
    body = await read_body(request, state.settings, too_large_hint=AUDIO_TOO_LARGE_HINT)
    request_bytes = len(body)  # held in the byte budget, a form's other parts included
    if form:
        option_names = declared_parameters(request) or ()
        body, part_type = await off_loop(audio_part, body, content_type, option_names,
                                         inline=len(body) <= INLINE_BODY_BYTES)
        _check_audio_type(part_type)
    options: dict[str, Any] = {"bandwidth_id": bandwidth_id, "bandwidth": bandwidth, "deadline": deadline.at,
               "request_id": request_id_of(request), "sample_rate": sample_rate}
    if stream:
        work_stream = vocoder.stream_resynthesis(slot, body, **options)
        return streamed_response(await unless_disconnected(request, work_stream), fmt, options["request_id"])
    work = vocoder.resynthesize(slot, body, request_bytes=request_bytes, encode=fmt, **options)
    return audio_response(await unless_disconnected(request, work), fmt)


# /resynthesize defaults to the first mel model, but takes any: on a server of EnCodec models alone, say so.
RESYNTHESIS_MODEL_HINT = ", or name a served model with ?model= (an EnCodec one with bandwidth or bandwidth_id)"
AUDIO_TOO_LARGE_HINT = "; compressed audio (FLAC, OGG/Opus, MP3) carries the same audio in far fewer bytes"


def _format(request: Request, requested: OutputFormat | None, stream: bool, sample_rate: int) -> OutputFormat:
    """The answer's format, refused before any work when it cannot carry the answer (a stream, a rate)."""
    fmt = choose_format(requested, request.headers.get("accept"), streamed=stream)
    if stream:
        check_streamable(fmt, from_accept=requested is None)
    check_encodable(fmt, sample_rate)
    return fmt


def _serving(request: Request) -> tuple[ServiceState, Vocoder]:
    state = service_state(request)
    return state, Vocoder(state)


def _check_audio_type(content_type: str | None) -> None:
    """415 unless ``content_type`` (of the body, or of its multipart file part) is absent or an audio type."""
    kind = media_type(content_type)
    if kind and kind not in AUDIO_TYPES:
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Type {clip(kind)}; expected one of {', '.join(sorted(AUDIO_TYPES))}, "
            f"or {FORM_DATA} with the audio file in a part named 'file' (curl -F file=@speech.wav)"
        )
